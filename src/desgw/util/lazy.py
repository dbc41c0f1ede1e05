"""Lazy re-exports of a package's public names (PEP 562 module ``__getattr__``/``__dir__``).

Each package ``__init__`` lists its entry points in ``__all__`` and maps each to the submodule
that defines it; the submodule is imported on first use, so ``import desgw.X`` stays cheap for
the command line. The packages keep two one-line functions (so type checkers see a module
``__getattr__``) and delegate here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["lazy_attribute", "lazy_dir"]


def lazy_attribute(package: str, table: Mapping[str, str], name: str) -> Any:
    """The public ``name`` of ``package``, imported from its submodule ``table[name]``.

    Raises
    ------
    AttributeError
        ``name`` is not one of the package's lazy names.
    """
    if name in table:
        return getattr(importlib.import_module(f".{table[name]}", package), name)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


def lazy_dir(package: str, public: Iterable[str]) -> list[str]:
    """``dir()`` of ``package``: its module globals and its public names."""
    return sorted(set(vars(sys.modules[package])) | set(public))
