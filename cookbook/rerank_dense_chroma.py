"""MaxSim reranking on top of a dense Chroma retriever (LangChain + langchain-chroma).

Many applications already have a dense vector store: one embedding per chunk in Chroma, searched
by cosine similarity. ColBERT can sharpen its ranking without re-indexing anything: fetch a
generous candidate list from the dense retriever, then rerank it with exact MaxSim (late
interaction) and keep the best few. The recipe:

1. splits the text files of a folder into paragraphs (LangChain ``Document``\\ s);
2. stores them in a ``langchain_chroma.Chroma`` vector store, embedded with a sentence-transformers
   model through a ten-line LangChain ``Embeddings`` adapter over latewise's :class:`BertEncoder`
   (any LangChain ``Embeddings`` works here, e.g. ``HuggingFaceEmbeddings``);
3. reranks the dense retriever's candidates with :class:`MaxSimCompressor` and a ColBERT model,
   and prints both rankings.

Run it::

    python cookbook/rerank_dense_chroma.py
    python cookbook/rerank_dense_chroma.py --query "How do bees tell each other where flowers are?"
    python cookbook/rerank_dense_chroma.py --model minilm --candidates 10 --top-n 3

``--dense-model`` is the single-vector model of the Chroma store (the default, all-MiniLM-L6-v2,
is bundled by ``latewise[minilm]``); ``--model`` the ColBERT reranker (a hub id such as
``answerdotai/answerai-colbert-small-v1``, a local folder, or ``minilm`` as a zero-shot ColBERT).

In a chain, the reranking retriever is ``RunnableParallel(docs=dense, query=RunnablePassthrough())
| RunnableLambda(lambda x: compressor.compress_documents(x["docs"], x["query"]))``, or
``ContextualCompressionRetriever(base_compressor=compressor, base_retriever=dense)`` from
``langchain-classic``.

Needs ``pip install 'latewise[langchain,minilm]' langchain-chroma``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


def make_embeddings(encoder: Any) -> Any:
    """A LangChain ``Embeddings`` over a latewise single-vector encoder (BertEncoder)."""
    from langchain_core.embeddings import Embeddings

    class LatewiseEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [v[0].tolist() for v in encoder.encode_documents(texts)]

        def embed_query(self, text: str) -> list[float]:
            return encoder.encode_queries([text])[0][0].tolist()  # type: ignore[no-any-return]

    return LatewiseEmbeddings()


def load_paragraphs(folder: Path) -> list[Any]:
    """Every paragraph of the .txt/.md files in ``folder`` as a LangChain Document."""
    from langchain_core.documents import Document

    docs = []
    for file in sorted([*folder.glob("*.txt"), *folder.glob("*.md")]):
        paragraphs = [p.strip() for p in file.read_text(encoding="utf-8").split("\n\n")]
        for i, text in enumerate(p for p in paragraphs if len(p.split()) > 5):
            docs.append(
                Document(
                    id=f"{file.name}#{i}",
                    page_content=text,
                    metadata={"source": file.name, "paragraph": i},
                )
            )
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="answerdotai/answerai-colbert-small-v1",
        help="ColBERT reranker: hub id, local folder or 'minilm'",
    )
    parser.add_argument(
        "--dense-model",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="single-vector model of the Chroma store",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="folder of .txt/.md files")
    parser.add_argument("--query", default="How does HNSW trade recall for speed?")
    parser.add_argument(
        "--candidates", type=int, default=10, help="documents from the dense retriever"
    )
    parser.add_argument("--top-n", type=int, default=3, help="documents kept after reranking")
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="keep the Chroma database in this folder (default: in memory)",
    )
    parser.add_argument("--collection", default="cookbook-dense")
    args = parser.parse_args(argv)

    import chromadb
    from chromadb.config import Settings
    from langchain_chroma import Chroma

    from latewise import BertEncoder, load_encoder
    from latewise.integrations.langchain import MaxSimCompressor

    settings = Settings(anonymized_telemetry=False)
    if args.path:
        client = chromadb.PersistentClient(str(args.path), settings=settings)
    else:
        client = chromadb.EphemeralClient(settings=settings)
    dense_store = Chroma(
        collection_name=args.collection,
        embedding_function=make_embeddings(BertEncoder(args.dense_model)),
        client=client,
        collection_metadata={"hnsw:space": "cosine"},
    )
    docs = load_paragraphs(args.data)
    dense_store.add_documents(docs, ids=[d.id for d in docs])  # same ids again: upsert
    dense = dense_store.as_retriever(search_kwargs={"k": args.candidates})
    encoder = load_encoder(args.model)
    if encoder.modality != "text":  # a ColPali-family checkpoint reads page images
        print(
            f"error: --model {args.model} loads {type(encoder).__name__}, which reads page "
            "images, not text; this recipe reranks text paragraphs and needs a text model (minilm, "
            "answerdotai/answerai-colbert-small-v1...). For PDF pages run "
            "python cookbook/llamaindex_colpali_pdf.py",
            file=sys.stderr,
        )
        return 2
    compressor = MaxSimCompressor(encoder=encoder, top_n=args.top_n)

    candidates = dense.invoke(args.query)
    reranked = compressor.compress_documents(candidates, args.query)

    print(f"Question: {args.query}\n\nDense retriever ({args.dense_model}), top {len(candidates)}:")
    for rank, doc in enumerate(candidates, 1):
        print(f"{rank:2}. {doc.id}: {' '.join(doc.page_content.split())[:80]}...")
    print(f"\nAfter MaxSim reranking ({args.model}), top {len(reranked)}:")
    for rank, doc in enumerate(reranked, 1):
        score = doc.metadata["relevance_score"]
        print(f"{rank:2}. [{score:.2f}] {doc.id}: {' '.join(doc.page_content.split())[:80]}...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
