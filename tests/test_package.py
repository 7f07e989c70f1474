"""The package as users get it: one ``ilinkbot`` namespace, an explicit public API, no import
cycles, and a wheel that works from a folder holding the user's own ``bot.py``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import ilinkbot
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from tests.processes import OWNER, login, wait_until, write_config

ROOT = Path(__file__).resolve().parent.parent
#: The folders of the design card and the namespace each installs as.
LAYERS = {"ilinkbot": "ilinkbot", "bot": "ilinkbot.bot", "cdn": "ilinkbot.cdn",
          "ilink": "ilinkbot.ilink", "store": "ilinkbot.store"}  # fmt: skip


def test_all_lists_exactly_the_public_names() -> None:
    # As httpx's test_exported_members: every name in __all__ resolves, and every public
    # attribute that is not a submodule is listed.
    for name in ilinkbot.__all__:
        assert getattr(ilinkbot, name) is not None, name
    public = (
        {n for n in dir(ilinkbot) if not n.startswith("_")}
        - set(LAYERS.values())
        - {
            "annotations",
            "importlib",
            "TYPE_CHECKING",
            "Any",
            "bot",
            "cdn",
            "ilink",
            "store",
            "testing",
        }
    )
    assert public <= set(ilinkbot.__all__)
    assert {"Bot", "filters", "send_to_wechat", "Message", "Context", "IlinkError"} <= set(
        ilinkbot.__all__
    )
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ilinkbot.nope  # type: ignore[attr-defined]


# --- the wheel in a fresh environment ---------------------------------------------------

USER_BOT = textwrap.dedent(
    """
    import store  # the user's own modules, named like our layers
    import cdn
    from ilinkbot import Bot, filters

    bot = Bot()


    @bot.message(filters.text)
    async def echo(msg, ctx):
        await msg.reply(f"{store.PREFIX}{cdn.SUFFIX}: {msg.text}")


    if __name__ == "__main__":
        bot.run()
    """
)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with ilinkbot installed from a wheel (not editable).

    Its dependencies come from this environment's site-packages through a ``.pth`` line, so
    no download is needed; this environment's editable-install hook is not loaded there."""
    where = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the tracked files, so that no build/ is left in the checkout.
    source = where / "source"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(where / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = (where / "dist").glob("ilinkbot-*.whl")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "_ilinkbot_test_deps.pth").write_text(sysconfig.get_paths()["purelib"])
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    return venv


def test_wheel_installs_only_the_namespace(wheel_env: Path) -> None:
    py = wheel_env / "bin" / "python"
    probe = subprocess.run(
        [str(py), "-c", "import importlib.util as u, ilinkbot.bot.cli, ilinkbot.ilink.sandbox;"
         "print(ilinkbot.__file__); print([n for n in ('bot','store','cdn','ilink')"
         " if u.find_spec(n)])"],
        capture_output=True, text=True, cwd=wheel_env, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    file, tops = probe.stdout.splitlines()
    assert str(wheel_env) in file, "ilinkbot comes from the wheel, not the checkout"
    assert tops == "[]", "no top-level bot, store, cdn or ilink is installed"


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv


@pytest.mark.slow
@pytest.mark.parametrize("how", ["python bot.py", "ilinkbot run bot.py"])
def test_users_bot_py_runs_from_its_own_folder(
    wheel_env: Path, sandbox: tuple[Sandbox, SandboxServer], tmp_path: Path, how: str
) -> None:
    sb, srv = sandbox
    folder = tmp_path / "mybot"
    folder.mkdir()
    (folder / "bot.py").write_text(USER_BOT)
    (folder / "store.py").write_text('PREFIX = "mine"\n')
    (folder / "cdn.py").write_text('SUFFIX = "!"\n')
    home = tmp_path / "home"
    write_config(home)
    account = login(sb, srv, home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ILINKBOT_", "PYTHON"))}
    env.update(ILINKBOT_HOME=str(home), ILINKBOT_BASE_URL=srv.base_url,
               ILINKBOT_CDN_BASE_URL=srv.cdn_base_url)  # fmt: skip
    bin_ = wheel_env / "bin"
    argv = [str(bin_ / "python"), "bot.py"] if how == "python bot.py" else [
        str(bin_ / "ilinkbot"), "run", "bot.py"]  # fmt: skip
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        sb.user_says(OWNER, "hello", bot_id=account.bot_id)
        wait_until(lambda: len(sb.delivered()) >= 1 or proc.poll() is not None, 60, "the echo")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    output = (tmp_path / "run.log").read_text()
    assert [d["text"] for d in sb.delivered()] == ["mine!: hello"], output
