"""Packages whose names are imported on first use.

A package ``__init__`` that re-exports its modules' names would import them all, HTTP client
and crypto included, as soon as any one module of the package is imported (the CLI reads a
constant on every command). :func:`lazy_exports` gives such a package a module-level
``__getattr__`` and ``__dir__`` that import each name's module when the name is first used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``where`` maps a name to the module (relative
    to the package) that defines it; a name mapped to its own module is that module."""
    names = list(exported)

    def getattr_(name: str) -> Any:
        module_name = where.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(module_name, package)
        value = module if module_name.rsplit(".", 1)[-1] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return getattr_, dir_
