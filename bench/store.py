"""Store benchmark: latewise beside LanceDB (and PyLate PLAID) on the same precomputed vectors.

Every system ingests the same precomputed multi-vectors of a real text corpus (``bench/vectors.py``:
the bench's docstrings encoded once by MiniLM, projected to 128-d and cached; queries are the
standard library's known-item summaries), with the document texts. For each it prints:

- ingest seconds (vectors + texts in, index built, durable on disk),
- disk bytes per stored vector (the whole folder) and as a multiple of the float16 vector bytes;
  for latewise also where they go (:func:`chroma_disk`: packed vectors, first-stage rows,
  documents, SQLite rows, SQLite free pages),
- p50 / p95 single-query latency (warm; every system queried once per query, interleaved),
- recall@10 against exact MaxSim (computed here over the same vectors) and MRR@10 of the one
  known relevant document,
- open + first query in a fresh process,

and every figure as a ratio against latewise (float16) in the same run, then a one-line summary.
PyLate PLAID is included when ``pylate`` is installed (fast-plaid pins its own torch, so it is
not part of the ``bench`` extra); otherwise it is skipped with a note.

    pip install -e '.[bench]'                 # LanceDB
    python bench/store.py                     # 8,000 documents (encodes them once, then cached)
    python bench/store.py --docs 2000 --systems latewise,lancedb
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench._common import cpu_model, load_average, summary_line
from bench.vectors import CACHE_DIR, DIM, VectorSet, corpus_vectors

ALL_SYSTEMS = ("latewise", "latewise-hnsw", "latewise-2bit", "lancedb", "lancedb-ivfpq", "pylate")
#: ``scan_bytes`` of the ``latewise-hnsw`` system: Chroma's HNSW first stage, as collections
#: beyond ``scan_bytes`` use it, and as a process's first search uses it before its view loads.
HNSW_SCAN_BYTES = 1


# -- ground truth ------------------------------------------------------------------------------


def exact_top(vs: VectorSet, k: int = 10, *, cache_dir: Path | None = CACHE_DIR) -> np.ndarray:
    """``[n_queries, k]`` document indices of the exact MaxSim top ``k`` (float32 over the
    float16 vectors every system stores), cached next to the vectors."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for a in (*vs.docs, *vs.queries):  # every vector: corpora can share their first documents
        h.update(a.tobytes())
    key = f"exact-{h.hexdigest()[:16]}-{len(vs.docs)}-{len(vs.queries)}-k{k}.npy"
    path = cache_dir / key if cache_dir is not None else None
    if path is not None and path.exists():
        return np.load(path)
    lengths = torch.tensor([d.shape[0] for d in vs.docs])
    owner = torch.repeat_interleave(torch.arange(len(vs.docs)), lengths)
    flat = torch.from_numpy(np.concatenate(vs.docs)).float()
    scores = torch.zeros(len(vs.queries), len(vs.docs))
    qb = 16
    for s in range(0, len(vs.queries), qb):
        qs = [torch.from_numpy(q).float() for q in vs.queries[s : s + qb]]
        qcat = torch.cat(qs)
        qown = torch.repeat_interleave(torch.arange(len(qs)), torch.tensor([len(q) for q in qs]))
        best = torch.full((len(vs.docs), qcat.shape[0]), -torch.inf)
        for c in range(0, flat.shape[0], 100_000):
            sim = flat[c : c + 100_000] @ qcat.T
            idx = owner[c : c + 100_000].unsqueeze(1).expand_as(sim)
            best.scatter_reduce_(0, idx, sim, reduce="amax")
        per_q = torch.zeros(len(vs.docs), len(qs)).index_add_(1, qown, best)
        scores[s : s + len(qs)] = per_q.T
    top = scores.topk(k, dim=1).indices.numpy()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, top)
    return top


# -- the systems -------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    ingest_s: float = float("nan")
    ingest_cpu: float = float("nan")
    disk_bytes: int = 0
    lat: list[float] = field(default_factory=list)
    found: list[list[int]] = field(default_factory=list)
    open_s: float = float("nan")
    first_query_s: float = float("nan")
    note: str = ""


def folder_bytes(path: Path) -> int:
    return sum(
        os.path.getsize(os.path.join(dp, f)) for dp, _, files in os.walk(path) for f in files
    )


def chroma_disk(path: Path) -> dict[str, int]:
    """Where an embedded Chroma folder's bytes go: each collection's HNSW files (named by the
    part of the collection name after ``__lw_``: ``blobs`` the packed vectors, ``vectors`` the
    first-stage rows; the documents collection is ``documents``), SQLite's pages in use (rows,
    metadata, indexes) and its free pages (left by Chroma's purged write log; reused by later
    writes)."""
    import sqlite3

    db = path / "chroma.sqlite3"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        segments = con.execute(
            "select s.id, c.name from segments s join collections c on s.collection = c.id "
            "where s.scope = 'VECTOR'"
        ).fetchall()
        page = con.execute("pragma page_size").fetchone()[0]
        free = con.execute("pragma freelist_count").fetchone()[0] * page
    finally:
        con.close()
    parts: dict[str, int] = {}
    for seg, name in segments:
        part = name.split("__lw_", 1)[1] if "__lw_" in name else "documents"
        if (path / seg).is_dir():
            parts[part] = parts.get(part, 0) + folder_bytes(path / seg)
    parts["sqlite rows"] = db.stat().st_size - free
    parts["sqlite free"] = free
    return parts


class System(ABC):
    """One contender: ``build`` ingests, ``search`` answers one query (document indices)."""

    name: str

    @abstractmethod
    def build(self, vs: VectorSet, path: Path) -> None:
        """Ingest every document of ``vs`` into a new store at ``path``."""

    @abstractmethod
    def search(self, q: np.ndarray, k: int) -> list[int]:
        """The indices of the top ``k`` documents for query vectors ``q``."""

    def close(self) -> None:  # noqa: B027 - most systems hold nothing worth dropping
        """Drop in-memory state (before the folder is measured or removed)."""


def vectors_encoder(dim: int) -> Any:
    """A latewise encoder for collections fed only precomputed vectors (queries too)."""
    from latewise.encoders.base import Encoder

    class PrecomputedVectors(Encoder):
        def __init__(self) -> None:
            super().__init__("bench-precomputed-minilm-128", device="cpu")

        @property
        def dim(self) -> int:
            return dim

        def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
            raise ValueError("bench collections are fed vectors, not documents")

        def _encode_query_batch(self, queries: list[str]) -> Any:
            raise ValueError("bench queries are passed as vectors")

        def _encode_document_batch(self, documents: list[Any]) -> Any:
            raise ValueError("bench collections are fed vectors, not documents")

    return PrecomputedVectors()


class Latewise(System):
    def __init__(self, compression: int | None, *, hnsw: bool = False) -> None:
        self.compression = compression
        self.name = "latewise" if compression is None else f"latewise-{compression}bit"
        self.name += "-hnsw" if hnsw else ""
        self.scan = {"scan_bytes": HNSW_SCAN_BYTES} if hnsw else {}
        self.index: Any = None

    def build(self, vs: VectorSet, path: Path) -> None:
        from latewise import LateInteractionIndex

        self.index = LateInteractionIndex(
            vectors_encoder(DIM),
            path=path,
            collection="bench",
            compression=self.compression,
            **self.scan,
        )
        self.index.add_vectors(vs.docs, ids=[f"d{i}" for i in range(len(vs.docs))], texts=vs.texts)

    def search(self, q: np.ndarray, k: int) -> list[int]:
        import torch

        hits = self.index.search_vectors([torch.from_numpy(q.astype(np.float32))], k=k)[0]
        return [int(h.id[1:]) for h in hits]

    def close(self) -> None:
        self.index = None


class LanceDB(System):
    def __init__(self, ivf_pq: bool) -> None:
        self.ivf_pq = ivf_pq
        self.name = "lancedb-ivfpq" if ivf_pq else "lancedb"
        self.table: Any = None

    def build(self, vs: VectorSet, path: Path) -> None:
        import lancedb
        import pyarrow as pa

        db = lancedb.connect(str(path))
        schema = pa.schema(
            [
                pa.field("id", pa.int64()),
                pa.field("text", pa.string()),
                pa.field("vector", pa.list_(pa.list_(pa.float32(), DIM))),
            ]
        )
        self.table = db.create_table("bench", schema=schema)
        step = 1000
        for s in range(0, len(vs.docs), step):
            part = vs.docs[s : s + step]
            flat = pa.array(np.concatenate(part).astype(np.float32).ravel())
            inner = pa.FixedSizeListArray.from_arrays(flat, DIM)
            offsets = pa.array(
                np.concatenate([[0], np.cumsum([d.shape[0] for d in part])]), pa.int32()
            )
            vec = pa.ListArray.from_arrays(offsets, inner)
            batch = pa.table(
                {
                    "id": pa.array(range(s, s + len(part)), pa.int64()),
                    "text": pa.array(vs.texts[s : s + len(part)]),
                    "vector": vec,
                },
                schema=schema,
            )
            self.table.add(batch)
        if self.ivf_pq:
            from lancedb.index import IvfPq

            self.table.create_index("vector", config=IvfPq(distance_type="cosine"))

    def search(self, q: np.ndarray, k: int) -> list[int]:
        got = (
            self.table.search(q.astype(np.float32), vector_column_name="vector")
            .distance_type("cosine")
            .limit(k)
            .select(["id", "_distance"])
            .to_arrow()
        )
        return [int(x) for x in got.column("id").to_pylist()]

    def close(self) -> None:
        self.table = None


class PyLatePlaid(System):
    name = "pylate"

    def __init__(self) -> None:
        self.index: Any = None
        self.retriever: Any = None

    def build(self, vs: VectorSet, path: Path) -> None:
        from pylate import indexes, retrieve

        self.index = indexes.PLAID(index_folder=str(path), index_name="bench", override=True)
        self.index.add_documents(
            documents_ids=[str(i) for i in range(len(vs.docs))],
            documents_embeddings=[d.astype(np.float32) for d in vs.docs],
        )
        self.retriever = retrieve.ColBERT(index=self.index)

    def search(self, q: np.ndarray, k: int) -> list[int]:
        got = self.retriever.retrieve(queries_embeddings=[q.astype(np.float32)], k=k)[0]
        return [int(h["id"]) for h in got]

    def close(self) -> None:
        self.index = self.retriever = None


def make(name: str) -> System:
    if name == "latewise":
        return Latewise(None)
    if name == "latewise-hnsw":
        return Latewise(None, hnsw=True)
    if name == "latewise-2bit":
        return Latewise(2)
    if name == "lancedb":
        return LanceDB(False)
    if name == "lancedb-ivfpq":
        return LanceDB(True)
    if name == "pylate":
        return PyLatePlaid()
    raise SystemExit(f"unknown system {name!r}; choose from {', '.join(ALL_SYSTEMS)}")


def available(name: str) -> str | None:
    """``None`` when the system can run, else why not."""
    import importlib.util

    module = {"lancedb": "lancedb", "lancedb-ivfpq": "lancedb", "pylate": "pylate"}.get(name)
    if module and importlib.util.find_spec(module) is None:
        extra = (
            "pip install pylate (pins its own torch: use a separate venv)"
            if module == "pylate"
            else "pip install -e '.[bench]'"
        )
        return f"skipped: {module} is not installed ({extra})"
    return None


# -- the Chroma floor --------------------------------------------------------------------------


def chroma_floor(built: Path, path: Path) -> tuple[float, float, dict[str, int]]:
    """Chroma's own time to store what latewise stored: every record of the latewise
    collection in ``built`` (documents, first-stage rows, packed vectors, log) read back, then
    added verbatim, with the same collection settings and batches of Chroma's largest size, to
    a new folder ``path``. No latewise work is timed: ``(wall s, CPU s, rows per collection)``."""
    import chromadb
    from chromadb.config import Settings

    from latewise.store.chroma import read_pages

    settings = Settings(anonymized_telemetry=False)
    src = chromadb.PersistentClient(str(built), settings=settings)
    payloads = []
    for listed in src.list_collections():
        col = src.get_collection(listed if isinstance(listed, str) else listed.name)
        got: dict[str, list[Any]] = {"ids": [], "embeddings": [], "metadatas": [], "documents": []}
        for page in read_pages(col, ["embeddings", "metadatas", "documents"]):  # as latewise reads
            for key, values in got.items():
                values.extend(page[key] if page[key] is not None else [None] * len(page["ids"]))
        payloads.append((col.name, col.configuration.get("hnsw"), col.metadata, got))
    del src
    dst = chromadb.PersistentClient(str(path), settings=settings)
    step = dst.get_max_batch_size()
    c0, t0 = time.process_time(), time.perf_counter()
    for name, hnsw, meta, got in payloads:
        col = dst.create_collection(
            name, configuration={"hnsw": hnsw}, metadata=meta, embedding_function=None
        )
        for s in range(0, len(got["ids"]), step):
            docs = got["documents"]
            col.add(
                ids=got["ids"][s : s + step],
                embeddings=got["embeddings"][s : s + step],
                metadatas=got["metadatas"][s : s + step] if any(got["metadatas"]) else None,
                documents=docs[s : s + step] if docs and any(docs) else None,
            )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, {name: len(got["ids"]) for name, _, _, got in payloads}


# -- fresh-process open + first query ----------------------------------------------------------


def probe(name: str, path: Path, query_file: Path) -> dict[str, float]:
    """Open a persisted system and run its first query (in this, a fresh, process; the
    libraries are imported before the clock starts)."""
    q = np.load(query_file)
    if name.startswith("latewise"):
        import torch

        from latewise import LateInteractionIndex

        scan = {"scan_bytes": HNSW_SCAN_BYTES} if name.endswith("-hnsw") else {}
        t0 = time.perf_counter()
        index = LateInteractionIndex(vectors_encoder(DIM), path=path, collection="bench", **scan)
        t1 = time.perf_counter()
        index.search_vectors([torch.from_numpy(q.astype(np.float32))], k=10)
    elif name.startswith("lancedb"):
        import lancedb

        t0 = time.perf_counter()
        table = lancedb.connect(str(path)).open_table("bench")
        t1 = time.perf_counter()
        table.search(q.astype(np.float32), vector_column_name="vector").distance_type(
            "cosine"
        ).limit(10).to_arrow()
    else:
        from pylate import indexes, retrieve

        t0 = time.perf_counter()
        index = indexes.PLAID(index_folder=str(path), index_name="bench", override=False)
        retriever = retrieve.ColBERT(index=index)
        t1 = time.perf_counter()
        retriever.retrieve(queries_embeddings=[q.astype(np.float32)], k=10)
    t2 = time.perf_counter()
    return {"open_s": t1 - t0, "first_query_s": t2 - t1}


def run_floor(built: Path, path: Path) -> Result:
    """:func:`chroma_floor` in a fresh process (its own Chroma clients)."""
    out = subprocess.run(
        [sys.executable, __file__, "--floor", str(built), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return Result("chroma floor", note=f"failed: {out.stderr.strip()[-300:]}")
    wall, cpu, counts = json.loads(out.stdout.strip().splitlines()[-1])
    rows = ", ".join(f"{name.removeprefix('bench')}: {n}" for name, n in counts.items())
    print(
        f"[chroma floor] Chroma adds latewise's records itself ({rows}): {wall:.1f} s, "
        f"CPU {cpu:.1f} s"
    )
    return Result("chroma floor", ingest_s=wall, ingest_cpu=cpu, note="floor")


def run_probe(name: str, path: Path, q: np.ndarray) -> dict[str, float]:
    qf = path.parent / f"{name}-query.npy"
    np.save(qf, q)
    env = dict(os.environ)
    # The child imports latewise from where this process did (a checkout's src/ or the install).
    import latewise

    src = str(Path(latewise.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, "--probe", name, str(path), str(qf)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        print(f"  [{name}] probe failed: {out.stderr.strip()[-500:]}")
        return {"open_s": float("nan"), "first_query_s": float("nan")}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmark -----------------------------------------------------------------------------


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def mrr_at_10(found: list[list[int]], relevant: list[int]) -> float:
    total = 0.0
    for f, r in zip(found, relevant, strict=True):
        if r in f[:10]:
            total += 1.0 / (f.index(r) + 1)
    return total / len(relevant)


def recall_at_10(found: list[list[int]], exact: np.ndarray) -> float:
    return statistics.mean(
        len(set(f[:10]) & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=8000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    parser.add_argument("--rounds", type=int, default=1, help="latency passes over the queries")
    parser.add_argument(
        "--eval", type=int, default=None, help="use an evenly spaced subset of this many queries"
    )
    parser.add_argument("--no-probe", action="store_true", help="skip the fresh-process open")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip Chroma's own add of latewise's records"
    )
    parser.add_argument("--dir", default=None, help="where to build (default: a temp folder)")
    parser.add_argument(
        "--probe", nargs=3, metavar=("SYSTEM", "PATH", "QUERY"), help=argparse.SUPPRESS
    )
    parser.add_argument("--floor", nargs=2, metavar=("BUILT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        print(json.dumps(chroma_floor(Path(args.floor[0]), Path(args.floor[1]))))
        return
    if args.probe:
        print(json.dumps(probe(args.probe[0], Path(args.probe[1]), Path(args.probe[2]))))
        return

    vs = corpus_vectors(args.docs, args.queries)
    if args.eval and args.eval < len(vs.queries):
        keep = np.linspace(0, len(vs.queries) - 1, args.eval).round().astype(int).tolist()
        vs.queries = [vs.queries[i] for i in keep]
        vs.relevant = [vs.relevant[i] for i in keep]
    n_vec = vs.n_vectors
    vec_bytes = n_vec * DIM * 2
    print(
        f"corpus: {len(vs.docs)} documents, {n_vec} vectors ({n_vec / len(vs.docs):.0f}/doc) "
        f"x {DIM}, {len(vs.queries)} known-item queries; {vs.description}\n"
        f"float16 vectors: {vec_bytes / 1e6:.1f} MB; CPU {cpu_model()}, {os.cpu_count()} cores, "
        f"load {load_average()}"
    )
    t = time.perf_counter()
    exact = exact_top(vs)
    print(f"exact MaxSim top 10 of every query: {time.perf_counter() - t:.1f} s (cached after)")

    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    results: dict[str, Result] = {}
    systems: dict[str, System] = {}
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lw-store-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            why = available(name)
            if why:
                results[name] = Result(name, note=why)
                print(f"[{name}] {why}")
                continue
            sysm = make(name)
            path = root / name
            shutil.rmtree(path, ignore_errors=True)
            gc.collect()
            c0, t = time.process_time(), time.perf_counter()
            sysm.build(vs, path)
            r = Result(name, ingest_s=time.perf_counter() - t, ingest_cpu=time.process_time() - c0)
            r.disk_bytes = folder_bytes(path)
            print(
                f"[{name}] ingest {r.ingest_s:.1f} s, CPU {r.ingest_cpu:.1f} s "
                f"({len(vs.docs) / r.ingest_s:.0f} docs/s), "
                f"disk {r.disk_bytes / 1e6:.1f} MB = {r.disk_bytes / n_vec:.0f} B/vector "
                f"({r.disk_bytes / vec_bytes:.2f}x the float16 vectors), load {load_average()}"
            )
            if name.startswith("latewise"):
                parts = chroma_disk(path)
                print(
                    f"  [{name}] disk, B/vector: "
                    + ", ".join(f"{k} {v / n_vec:.0f}" for k, v in parts.items() if v)
                )
            results[name] = r
            systems[name] = sysm
        # Latency of a warm process: one untimed pass of every query on every system (latewise
        # reads the candidates' vectors from Chroma once and keeps them; the peers' files enter
        # the page cache), then every query on every system in turn.
        for sysm in systems.values():
            for q in vs.queries:
                sysm.search(q, 10)
        for rnd in range(args.rounds):
            for q in vs.queries:
                for name, sysm in systems.items():
                    t = time.perf_counter()
                    got = sysm.search(q, 10)
                    results[name].lat.append(time.perf_counter() - t)
                    if rnd == 0:
                        results[name].found.append(got)
        for sysm in systems.values():
            sysm.close()
        gc.collect()
        if not args.no_probe:
            for name in systems:
                results[name].__dict__.update(run_probe(name, root / name, vs.queries[0]))
        if "latewise" in systems and not args.no_floor:
            results["chroma floor"] = run_floor(root / "latewise", root / "chroma-floor")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    report(results, vs, exact, vec_bytes)


def report(results: dict[str, Result], vs: VectorSet, exact: np.ndarray, vec_bytes: int) -> None:
    n_vec = vs.n_vectors
    ref = results.get("latewise")
    rows = []
    print(
        f"\n{'system':<15}{'ingest s':>10}{'x lw':>7}{'cpu s':>8}{'x lw':>7}{'B/vec':>8}"
        f"{'x f16':>7}{'x lw':>7}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'x lw':>7}{'rec@10':>8}{'MRR@10':>8}{'open s':>8}"
        f"{'1st q s':>9}"
    )
    metrics: dict[str, dict[str, float]] = {}
    floor = results.get("chroma floor")
    for name, r in results.items():
        if r.note:
            if r is not floor or floor.note != "floor":
                print(f"{name:<15}{r.note}")
            continue
        m = {
            "ingest": r.ingest_s,
            "cpu": r.ingest_cpu,
            "bpv": r.disk_bytes / n_vec,
            "p50": percentile(r.lat, 0.5) * 1e3,
            "p95": percentile(r.lat, 0.95) * 1e3,
            "recall": recall_at_10(r.found, exact),
            "mrr": mrr_at_10(r.found, vs.relevant),
            "open": r.open_s,
            "first": r.first_query_s,
        }
        metrics[name] = m
    base = metrics.get("latewise") if ref and not ref.note else None
    for name, m in metrics.items():

        def x(key: str, m: dict[str, float] = m) -> str:
            return f"{m[key] / base[key]:.2f}" if base else "-"

        print(
            f"{name:<15}{m['ingest']:>10.1f}{x('ingest'):>7}{m['cpu']:>8.1f}{x('cpu'):>7}"
            f"{m['bpv']:>8.0f}"
            f"{m['bpv'] * n_vec / vec_bytes:>7.2f}{x('bpv'):>7}{m['p50']:>9.1f}{m['p95']:>9.1f}"
            f"{x('p50'):>7}{m['recall']:>8.3f}{m['mrr']:>8.3f}{m['open']:>8.2f}{m['first']:>9.2f}"
        )
        rows.append(name)
    items: dict[str, str] = {}
    for name, m in metrics.items():
        items[name] = (
            f"ingest {m['ingest']:.1f}s (CPU {m['cpu']:.1f}s), {m['bpv']:.0f} B/vec, "
            f"p50 {m['p50']:.1f}ms, "
            f"recall@10 {m['recall']:.3f}, MRR@10 {m['mrr']:.3f}, open+1st "
            f"{m['open'] + m['first']:.2f}s"
        )
    lw, lw2, flat = metrics.get("latewise"), metrics.get("latewise-2bit"), metrics.get("lancedb")
    if floor is not None and floor.note == "floor":
        ref_s = f" = {floor.ingest_s / lw['ingest']:.2f}x latewise" if lw else ""
        lance = f", LanceDB flat {flat['ingest']:.1f} s" if flat else ""
        print(
            f"{'chroma floor':<15}{floor.ingest_s:>10.1f}{'':>7}{floor.ingest_cpu:>8.1f}   "
            f"(Chroma's own add of latewise's records{ref_s}{lance})"
        )
        if lw:
            items["chroma floor/latewise ingest"] = f"{floor.ingest_s / lw['ingest']:.2f}"
        if flat:
            items["lancedb/chroma floor ingest"] = f"{flat['ingest'] / floor.ingest_s:.2f}"
    if lw and flat:
        items["lancedb/latewise ingest"] = f"{flat['ingest'] / lw['ingest']:.2f}"
        items["lancedb/latewise ingest CPU"] = f"{flat['cpu'] / lw['cpu']:.2f}"
    if lw and lw2:
        items["2bit/f16 ingest"] = f"{lw2['ingest'] / lw['ingest']:.2f}"
        items["2bit/f16 ingest CPU"] = f"{lw2['cpu'] / lw['cpu']:.2f}"
        items["2bit/f16 MRR"] = f"{lw2['mrr'] / lw['mrr']:.3f}"
    print(summary_line("bench/store.py", items))


if __name__ == "__main__":
    main()
