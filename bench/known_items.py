"""A labelled text set built offline from the Python standard library's docstrings.

Known-item retrieval: for each public function, method or class of the standard library with a
docstring, the docstring's one-line summary is the *query* and the rest of its documentation (the
qualified name and signature plus the remaining docstring, summary removed) is the *document*. The
one relevant document of a query is the one it was cut from.

The sources are parsed with :mod:`ast` (nothing is imported or executed), walked in sorted order,
so the set is deterministic for a given Python version. Filters:

- private names (a leading underscore), tests, demos, ``site-packages`` and dunder modules
  (``__main__``) are skipped;
- queries with fewer than ``min_query_words`` words, and documents whose remaining docstring is
  shorter than ``min_body_chars`` characters, are dropped;
- a summary that occurs more than once (``"Return self."``) is ambiguous as a known-item query,
  so every item with it is dropped; identical documents are dropped too.

Usage::

    python bench/known_items.py --max-docs 3000       # prints counts and a few examples

    from bench.known_items import stdlib_docstrings
    ds = stdlib_docstrings(max_docs=3000)
    ds.queries[i], ds.documents[ds.relevant[i]]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import random
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LabelledSet", "stdlib_docstrings"]

_SKIP_DIRS = {
    "test",
    "tests",
    "turtledemo",
    "site-packages",
    "dist-packages",
    "ensurepip",
    "__pycache__",
    "venv",
    "pydoc_data",
}


@dataclass(frozen=True)
class LabelledSet:
    """Queries, documents and the one relevant document per query.

    Attributes:
        queries: query texts.
        documents: document texts.
        relevant: ``relevant[i]`` is the index in ``documents`` of query ``i``'s answer.
        names: the dotted name each document documents (``json.dumps``...).
    """

    queries: list[str]
    documents: list[str]
    relevant: list[int]
    names: list[str]

    def fingerprint(self) -> str:
        """A short hash of the whole set (to key caches of encoded vectors)."""
        h = hashlib.sha256()
        for text in (*self.queries, "\0", *self.documents):
            h.update(text.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:16]


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        return f"class {node.name}({bases})" if bases else f"class {node.name}"
    args = ast.unparse(node.args)
    ret = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{node.name}({args}){ret}"


def _split_docstring(doc: str) -> tuple[str, str]:
    """(summary, rest) of a docstring.

    The summary is the first paragraph, or its first sentence when the paragraph is long or is the
    whole docstring; the rest is everything after it.
    """
    paragraphs = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    first = " ".join(line.strip() for line in paragraphs[0].splitlines())
    rest = paragraphs[1].strip() if len(paragraphs) > 1 else ""
    if len(first.split()) > 30 or not rest:
        head, sep, tail = first.partition(". ")
        if sep and tail:
            first, rest = head + ".", (tail + "\n\n" + rest).strip()
    return first.strip(), rest


def _items(path: Path, module: str) -> list[tuple[str, str, str]]:
    """(dotted name, summary, document) for every documented public def/class in a file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out: list[tuple[str, str, str]] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if node.name.startswith("_"):
                continue
            name = f"{prefix}.{node.name}"
            doc = ast.get_docstring(node, clean=True)
            if doc:
                summary, rest = _split_docstring(doc)
                if summary and rest:
                    document = f"{name}: {_signature(node)}\n\n{rest}"
                    out.append((name, summary, document))
            if isinstance(node, ast.ClassDef):
                visit(node.body, name)

    visit(tree.body, module)
    return out


def _module_name(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    # Pure-Python twins of C modules (_pydecimal, _pyio, _collections_abc) are documented API;
    # dunder modules (__main__, __phello__) are not.
    if not parts or any(p.startswith("__") for p in parts):
        return None
    return ".".join(parts)


def stdlib_docstrings(
    *,
    max_docs: int | None = 4000,
    min_query_words: int = 4,
    min_body_chars: int = 40,
    max_body_chars: int = 2000,
    seed: int = 0,
    stdlib: str | os.PathLike[str] | None = None,
) -> LabelledSet:
    """Build the known-item set from the standard library's sources.

    Args:
        max_docs: keep at most this many items (a seeded sample; ``None`` keeps all).
        min_query_words: drop summaries shorter than this many words.
        min_body_chars: drop items whose remaining docstring is shorter than this.
        max_body_chars: cut documents to this many characters (encoders truncate anyway).
        seed: the sampling seed.
        stdlib: the standard library folder (default: this interpreter's).
    """
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            path = Path(dirpath) / fn
            module = _module_name(path, root)
            if module is not None and not module.startswith(("test", "this", "antigravity")):
                files.append((path, module))
    raw: list[tuple[str, str, str]] = []
    for path, module in files:
        raw.extend(_items(path, module))

    norm = re.compile(r"\s+")
    summary_counts = Counter(norm.sub(" ", s.lower()) for _, s, _ in raw)
    seen_docs: set[str] = set()
    kept: list[tuple[str, str, str]] = []
    for name, summary, document in raw:
        key = norm.sub(" ", summary.lower())
        if summary_counts[key] > 1 or len(summary.split()) < min_query_words:
            continue
        body = document.split("\n\n", 1)[1]
        if len(body) < min_body_chars:
            continue
        document = document[:max_body_chars]
        if document in seen_docs:
            continue
        seen_docs.add(document)
        kept.append((name, summary, document))
    if max_docs is not None and len(kept) > max_docs:
        rng = random.Random(seed)
        kept = sorted(rng.sample(kept, max_docs), key=lambda t: t[0])
    return LabelledSet(
        queries=[s for _, s, _ in kept],
        documents=[d for _, _, d in kept],
        relevant=list(range(len(kept))),
        names=[n for n, _, _ in kept],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-docs", type=int, default=4000)
    parser.add_argument("--examples", type=int, default=3)
    args = parser.parse_args()
    ds = stdlib_docstrings(max_docs=args.max_docs)
    lengths = sorted(len(d) for d in ds.documents)
    print(
        f"{len(ds.queries)} queries / documents (fingerprint {ds.fingerprint()}); document "
        f"chars median {lengths[len(lengths) // 2]}, max {lengths[-1]}"
    )
    for i in range(0, len(ds.queries), max(1, len(ds.queries) // max(1, args.examples)))[
        : args.examples
    ]:
        print(f"\nQUERY: {ds.queries[i]}\nDOC:   {ds.documents[ds.relevant[i]][:300]!r}")


if __name__ == "__main__":
    main()
