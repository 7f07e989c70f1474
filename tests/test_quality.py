"""The static checks the project promises: ruff clean, ``ilink/`` under ``mypy --strict``,
and the layers pointing down only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_mypy_strict_on_ilink_and_clean_elsewhere() -> None:
    strict = run("mypy", "--strict", "ilink")
    assert strict.returncode == 0, strict.stdout
    rest = run("mypy", "cdn", "store", "bot")
    assert rest.returncode == 0, rest.stdout


def test_ruff_clean() -> None:
    r = run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout


ALLOWED = {"bot": {"cdn", "store", "ilink"}, "cdn": {"ilink"}, "ilink": set(), "store": set()}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layers_point_down_only(package: str) -> None:
    bad = []
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package and top not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []
