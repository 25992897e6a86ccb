"""LlamaIndex query engine over text files, retrieved with ColBERT (late interaction).

The recipe reads the text files of a folder with LlamaIndex's ``SimpleDirectoryReader``, indexes
them with a ColBERT model in Chroma through :class:`LateInteractionRetriever.from_defaults`
(the documents are split into nodes that fit the model, with its own tokenizer), and answers a
question with LlamaIndex's ``RetrieverQueryEngine``. It prints the answer and the source nodes
with their MaxSim scores.

Run it::

    python cookbook/llamaindex_query_engine.py                       # offline: mock LLM
    python cookbook/llamaindex_query_engine.py --query "Who designed the printing press?"
    python cookbook/llamaindex_query_engine.py --model minilm        # bundled, no download
    python cookbook/llamaindex_query_engine.py --llm openai  # pip install llama-index-llms-openai
    python cookbook/llamaindex_query_engine.py --path ./storage      # index once, reopen later

``--model`` takes a hub id (``answerdotai/answerai-colbert-small-v1``, ``colbert-ir/colbertv2.0``),
a local checkpoint folder, or ``minilm`` (all-MiniLM-L6-v2 from ``latewise[minilm]``, used as a
zero-shot ColBERT). The default ``--llm mock`` is LlamaIndex's ``MockLLM``: it answers with the
prompt it was given, so you see exactly the context a real LLM would read.

Needs ``pip install 'latewise[llama-index]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


def make_llm(name: str, model: str | None = None) -> Any:
    """The LlamaIndex LLM that writes the answer: ``mock`` (offline), ``openai`` or ``ollama``."""
    if name == "mock":
        from llama_index.core.llms import MockLLM

        return MockLLM()
    try:
        if name == "openai":  # needs OPENAI_API_KEY
            from llama_index.llms.openai import OpenAI

            return OpenAI(model=model or "gpt-4o-mini")
        from llama_index.llms.ollama import Ollama

        return Ollama(model=model or "llama3.2", request_timeout=300)
    except ImportError as exc:
        raise SystemExit(f"--llm {name} needs: pip install llama-index-llms-{name}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="answerdotai/answerai-colbert-small-v1",
        help="ColBERT checkpoint: hub id, local folder or 'minilm'",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="folder of text files")
    parser.add_argument("--query", default="Where does the Blue Nile begin?")
    parser.add_argument("--top-k", type=int, default=3, help="nodes given to the LLM")
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="keep the Chroma database in this folder (default: in memory)",
    )
    parser.add_argument("--collection", default="cookbook-text")
    parser.add_argument("--llm", choices=["mock", "openai", "ollama"], default="mock")
    parser.add_argument("--llm-model", default=None, help="model name for --llm openai/ollama")
    args = parser.parse_args(argv)

    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.query_engine import RetrieverQueryEngine

    from latewise import load_encoder
    from latewise.integrations.llama_index import PERSIST_FILENAME, LateInteractionRetriever

    encoder = load_encoder(args.model)
    if encoder.modality != "text":  # a ColPali-family checkpoint reads page images
        print(
            f"error: --model {args.model} loads {type(encoder).__name__}, which reads page "
            "images, not text; this recipe indexes text files and needs a text model (minilm, "
            "answerdotai/answerai-colbert-small-v1...). For PDF pages run "
            "python cookbook/llamaindex_colpali_pdf.py",
            file=sys.stderr,
        )
        return 2
    if args.path is not None and (args.path / PERSIST_FILENAME).exists():
        # Indexed by an earlier run: reopen it, nothing is encoded again.
        retriever = LateInteractionRetriever.from_persist_dir(
            args.path, encoder, similarity_top_k=args.top_k
        )
    else:
        documents = SimpleDirectoryReader(str(args.data), required_exts=[".txt", ".md"]).load_data()
        # Split the documents into nodes that fit the model, encode them and store them in
        # Chroma (on disk with --path, else in memory).
        retriever = LateInteractionRetriever.from_defaults(
            documents=documents,
            encoder=encoder,
            path=args.path,
            ephemeral=args.path is None,
            collection=args.collection,
            similarity_top_k=args.top_k,
        )
        if args.path is not None:
            retriever.persist(args.path)  # what from_persist_dir needs to reopen it

    # Retrieve the top-k nodes by exact MaxSim and write the answer from them.
    engine = RetrieverQueryEngine.from_args(retriever, llm=make_llm(args.llm, args.llm_model))
    response = engine.query(args.query)

    print(f"Question: {args.query}\n")
    print(f"Answer:\n{response}\n")
    print("Sources:")
    for rank, hit in enumerate(response.source_nodes, 1):
        snippet = " ".join(hit.node.get_content().split())[:90]
        print(f"{rank}. [{hit.score:.2f}] {hit.node.metadata['file_name']}: {snippet}...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
