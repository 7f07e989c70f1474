"""Finding the ``Bot`` object named on the command line: ``module:attr``, ``module``,
``path/to/bot.py`` or ``path/to/bot.py:attr``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .errors import BotError
from .exitcodes import Exit

__all__ = ["load_bot"]


def load_bot(spec: str) -> Any:
    from .app import Bot

    target, _, attr = spec.partition(":") if not _is_windows_path(spec) else (spec, "", "")
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise BotError(f"no such file: {target}", Exit.NOT_FOUND)
        name = f"_ilinkbot_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path.resolve())
        if module_spec is None or module_spec.loader is None:
            raise BotError(f"cannot load {target}", Exit.USAGE)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))
        module_spec.loader.exec_module(module)
    else:
        # The current directory is importable, as with `python -m` and uvicorn; the
        # `ilinkbot` script alone would only see its own bin directory.
        cwd = str(Path.cwd())
        if "" not in sys.path and cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise BotError(f"cannot import {target!r}: {exc}", Exit.NOT_FOUND) from None
    if attr:
        obj = getattr(module, attr, None)
        if not isinstance(obj, Bot):
            raise BotError(f"{spec}: {attr!r} is not a Bot", Exit.USAGE)
        return obj
    found = [v for v in vars(module).values() if isinstance(v, Bot)]
    if len(found) != 1:
        what = "no Bot object" if not found else "several Bot objects"
        raise BotError(f"{spec}: {what}; name one as {target}:NAME", Exit.USAGE)
    return found[0]


def _is_windows_path(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/"
