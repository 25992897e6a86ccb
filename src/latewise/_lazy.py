"""Names a package exports lazily (PEP 562): each imports its home module on first use.

So ``import latewise`` (or ``latewise.encoders``, ``latewise.store``) stays cheap: torch,
transformers and Chroma load only when a name that needs them is first read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, homes: Mapping[str, str], names: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of module ``package``.

    Args:
        package: the module's ``__name__``.
        homes: each lazy name -> the module that defines it.
        names: the module's ``__all__`` (what ``dir()`` lists).

    Returns:
        ``__getattr__`` (imports a name's home, keeps the value in the module, raises
        ``AttributeError`` for unknown names) and ``__dir__``.
    """

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(names)

    return getattr_, dir_
