"""Extra docstring documents (from installed packages) to pad a benchmark corpus to size.

The standard library's known-item set (``bench/known_items.py``) holds a few thousand documents;
the index and scale benchmarks need tens of thousands of realistic texts. These come from the
docstrings of packages installed next to latewise (numpy, torch, transformers, chromadb, ...),
parsed with :mod:`ast` (nothing is imported), in sorted, deterministic order.
"""

from __future__ import annotations

import ast
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

__all__ = ["extra_docstrings"]


def _docstrings(path: Path, min_chars: int) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= min_chars:
                name = getattr(node, "name", path.stem)
                yield f"{name}: {doc[:2000]}"


def extra_docstrings(n: int, *, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct docstring documents from site-packages: those of at least 200 characters
    first, then (when a fresh install has fewer than ``n``) of at least 80."""
    root = Path(sysconfig.get_paths()["purelib"])
    seen = set(exclude or ())
    out: list[str] = []
    for min_chars in (200, 80):  # the second pass adds only the shorter ones (seen)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith((".", "_")) and d != "tests"
            )
            for fn in sorted(filenames):
                if not fn.endswith(".py"):
                    continue
                for doc in _docstrings(Path(dirpath) / fn, min_chars):
                    if doc not in seen:
                        seen.add(doc)
                        out.append(doc)
                        if len(out) >= n:
                            return out
    return out
