"""The static checks the project promises: ruff clean, ``ilink/`` under ``mypy --strict``,
and the layers pointing down only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def link_tree(where: Path) -> Path:
    """The installed layout (``ilinkbot/{bot,cdn,ilink,store}``) as symlinks, for mypy.

    mypy cannot follow setuptools' editable-install import hook, so it is pointed at a tree
    shaped like the wheel instead."""
    pkg = where / "ilinkbot"
    pkg.mkdir()
    for entry in (ROOT / "ilinkbot").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for layer in LAYERS:
        (pkg / layer).symlink_to(ROOT / layer, target_is_directory=True)
    return where


@pytest.mark.slow
def test_mypy_strict_on_ilink_and_clean_elsewhere(tmp_path: Path) -> None:
    tree = link_tree(tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "-p",
            "ilinkbot",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MYPYPATH": str(tree)},
    )
    assert r.returncode == 0, r.stdout


def test_ruff_clean() -> None:
    r = run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout


ALLOWED = {"bot": {"cdn", "store", "ilink"}, "cdn": {"ilink"}, "ilink": set(), "store": set()}
LAYERS = sorted(ALLOWED)


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
                parts = name.split(".")
                if parts[0] in ALLOWED:
                    bad.append(f"{path.relative_to(ROOT)} imports {name} outside ilinkbot.*")
                if parts[0] != "ilinkbot" or len(parts) < 2:
                    continue
                layer = parts[1]
                if layer in ALLOWED and layer != package and layer not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
                if layer not in ALLOWED and name != "ilinkbot":
                    bad.append(f"{path.relative_to(ROOT)} imports {name}, above the layers")
    assert bad == []
