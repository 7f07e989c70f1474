"""Configuration: file < environment, clear one-line errors, documented keys."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from ilinkbot.bot.config import Config, ConfigError, load_config
from tests.clirun import run_cli

ROOT = Path(__file__).resolve().parents[2]
KEYS = [f.name for f in dataclasses.fields(Config) if f.name not in ("home", "config_path")]


def test_example_has_every_key_with_its_default() -> None:
    example = json.loads((ROOT / "config.example.json").read_text())
    assert list(example) == KEYS
    defaults = Config(home=Path("x"))
    for key, value in example.items():
        default = getattr(defaults, key)
        assert (list(default) if isinstance(default, tuple) else default) == value, key


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in KEYS:
        assert f"| `{key}` |" in readme, f"README lacks a row for {key}"


def test_file_then_environment(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"reply_quota": 3, "base_url": "http://a"}))
    env = {"ILINKBOT_HOME": str(tmp_path), "ILINKBOT_BASE_URL": "http://b:1"}
    cfg = load_config(env=env)
    assert cfg.reply_quota == 3 and cfg.base_url == "http://b:1" and cfg.home == tmp_path
    assert cfg.config_path == tmp_path / "config.json"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "invalid JSON"),
        ('{"nope": 1}', "unknown key 'nope'"),
        ('{"reply_quota": "ten"}', "reply_quota must be"),
        ('{"base_url": "ftp://x"}', "must start with http"),
        ("[1]", "expected a JSON object"),
        ('{"log_level": "loud"}', "log_level must be one of"),
        ('{"cdn_download_domains": "qq.com"}', "cdn_download_domains must be a list"),
        ('{"cdn_download_domains": ["127.0.0.1"]}', "'127.0.0.1' is not a domain name"),
        ('{"cdn_download_domains": ["*.qq.com"]}', "is not a domain name"),
        ('{"cdn_download_domains": [7]}', "7 is not a domain name"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})


def test_cdn_download_domains_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"cdn_download_domains": ["Example.ORG.", "cdn.test"]}')
    assert load_config(path, env={}).cdn_download_domains == ("example.org", "cdn.test")
    path.write_text('{"cdn_download_domains": []}')
    assert load_config(path, env={}).cdn_download_domains == ()


def test_named_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(env={"ILINKBOT_CONFIG": str(tmp_path / "missing.json")})


def test_cli_reports_bad_config_in_one_line_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"reply_quota": 0}')
    env = {**os.environ, "ILINKBOT_HOME": str(tmp_path)}
    proc = run_cli(env, "send", "hi", cwd=ROOT)
    assert proc.code == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("ilinkbot: ")
    assert "reply_quota" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ilinkbot.db").exists()
