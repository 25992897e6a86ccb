"""Run latewise against a Chroma server: index from one process, search from another.

An embedded Chroma folder belongs to one process at a time; a Chroma server can be shared by many.
latewise keeps everything a reader needs in the server (the documents' vectors, their text and
metadata, and which encoder wrote them), so a second process opens the collection with
``LateInteractionIndex.open(collection, client=...)`` and searches it, loading the same encoder
by itself. The recipe:

1. starts ``chroma run`` on a free port in a temporary folder, unless you give ``--host``;
2. indexes a folder of text files in a *separate process* (this script's ``index`` command);
3. opens the collection from this process with a new client and searches it;
4. stops the server it started.

Run it::

    python cookbook/chroma_server.py                                  # starts its own server
    chroma run --path ./chroma-data --port 8000                       # or your own server...
    python cookbook/chroma_server.py --host localhost --port 8000     # ...used by the demo
    python cookbook/chroma_server.py index --host localhost --port 8000 --data docs/
    python cookbook/chroma_server.py search --host localhost --port 8000 --query "..."

``--model`` takes a ColBERT hub id (``answerdotai/answerai-colbert-small-v1``), a local folder or
``minilm``; ``search`` needs none, it uses the encoder stored with the collection. The same
``client=`` argument works for the LlamaIndex and LangChain integrations
(``LateInteractionRetriever.from_defaults(client=...)``,
``LateInteractionVectorStore(client=...)``), and for the command line
(``latewise search --host H --port P``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


def connect(host: str, port: int, timeout: float = 60.0) -> Any:
    """A Chroma ``HttpClient``, once the server answers (it may still be starting)."""
    import chromadb
    from chromadb.config import Settings

    deadline = time.monotonic() + timeout
    while True:
        try:
            client = chromadb.HttpClient(
                host=host, port=port, settings=Settings(anonymized_telemetry=False)
            )
            client.heartbeat()
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``chroma run`` on a free local port, its data and log in ``folder``."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = (folder / "chroma.log").open("wb")
    command = [
        chroma,
        "run",
        "--path",
        str(folder / "db"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), port


def index_files(args: argparse.Namespace) -> int:
    """The ``index`` command: add the files of ``--data`` to the collection on the server."""
    from latewise import LateInteractionIndex, load_encoder

    index = LateInteractionIndex(
        load_encoder(args.model), client=connect(args.host, args.port), collection=args.collection
    )
    report = index.add_files(args.data)  # re-running skips unchanged chunks
    print(f"[indexer] {report.summary()}; the collection holds {len(index)} documents")
    return 0


def search(args: argparse.Namespace) -> int:
    """The ``search`` command: open the collection on the server (with the encoder stored with
    it) and print the best documents for ``--query``."""
    from latewise import LateInteractionIndex

    index = LateInteractionIndex.open(args.collection, client=connect(args.host, args.port))
    print(f"[searcher] opened {index.name!r} ({len(index)} documents, {index.encoder})")
    print(f"[searcher] query: {args.query}")
    for rank, hit in enumerate(index.search(args.query, k=args.k), 1):
        snippet = " ".join((hit.text or "").split())[:80]
        print(f"{rank}. [{hit.score:.2f}] {hit.metadata['file_name']}: {snippet}...")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Start a server if needed, index in a child process, search from this one."""
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.host is None:
            server, args.port = start_server(Path(tmp))
            args.host = "127.0.0.1"
            print(f"Started `chroma run` on {args.host}:{args.port} (data in {tmp})", flush=True)
        try:
            connect(args.host, args.port, timeout=90)
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "index",
                    "--host",
                    args.host,
                    "--port",
                    str(args.port),
                    "--model",
                    args.model,
                    "--data",
                    str(args.data),
                    "--collection",
                    args.collection,
                ],
                check=True,
            )
            return search(args)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--host",
        default=None,
        help="Chroma server host (demo: start a local server when not given)",
    )
    common.add_argument("--port", type=int, default=8000, help="Chroma server port")
    common.add_argument("--collection", default="cookbook-server")
    common.add_argument(
        "--model",
        default="answerdotai/answerai-colbert-small-v1",
        help="ColBERT checkpoint for indexing: hub id, local folder or 'minilm'",
    )
    common.add_argument("--data", type=Path, default=DATA, help="folder of text files to index")
    common.add_argument("--query", default="Which rocket launched Apollo 11?")
    common.add_argument("--k", type=int, default=3, help="results to print")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("demo", "(the default) start a server if needed, index in a child process, search here"),
        ("index", "index --data into --collection on the server"),
        ("search", "search --collection on the server"),
    ]:
        commands.add_parser(name, parents=[common], help=text)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("demo", "index", "search", "-h", "--help"):
        argv.insert(0, "demo")  # the default command
    args = parser.parse_args(argv)
    if args.command in ("index", "search") and args.host is None:
        parser.error(f"{args.command} needs --host (and --port) of a running Chroma server")
    run = {"demo": demo, "index": index_files, "search": search}[args.command]
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
