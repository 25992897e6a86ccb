"""LangChain LCEL RAG chain with a ColBERT retriever.

The recipe indexes a folder of text files with a ColBERT model (``index.add_files`` cuts each file
into chunks the model reads whole, with its own tokenizer), wraps the index in latewise's LangChain
:class:`LateInteractionRetriever`, and answers a question with an LCEL RAG chain: retriever ->
``format_docs`` -> prompt -> chat model -> ``StrOutputParser``. The chain is written in LangChain's
"return sources" form, so the answer comes back with the documents it was written from; the
shortest form is::

    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt | chat_model | StrOutputParser()
    )

Run it::

    python cookbook/langchain_lcel_rag.py                            # offline: fake chat model
    python cookbook/langchain_lcel_rag.py --query "What is the waggle dance for?"
    python cookbook/langchain_lcel_rag.py --model minilm             # bundled, no download
    python cookbook/langchain_lcel_rag.py --llm openai     # pip install langchain-openai
    python cookbook/langchain_lcel_rag.py --llm ollama     # pip install langchain-ollama

``--model`` takes a hub id (``answerdotai/answerai-colbert-small-v1``, ``colbert-ir/colbertv2.0``),
a local checkpoint folder, or ``minilm`` (all-MiniLM-L6-v2 from ``latewise[minilm]`` used as a
zero-shot ColBERT). The default ``--llm fake`` is LangChain's ``ParrotFakeChatModel``: it replies
with the prompt it was given, so the chain runs offline and you see exactly what a real chat model
would read.

Needs ``pip install 'latewise[langchain]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"

PROMPT = """Answer the question using only the context below. Name the source you used.

Context:
{context}

Question: {question}"""


def make_chat_model(name: str, model: str | None = None) -> Any:
    """The LangChain chat model: ``fake`` (offline), ``openai`` or ``ollama``."""
    if name == "fake":
        from langchain_core.language_models import ParrotFakeChatModel

        return ParrotFakeChatModel()
    try:
        if name == "openai":  # needs OPENAI_API_KEY
            from langchain_openai import ChatOpenAI

            return ChatOpenAI(model=model or "gpt-4o-mini", temperature=0)
        from langchain_ollama import ChatOllama

        return ChatOllama(model=model or "llama3.2", temperature=0)
    except ImportError as exc:
        raise SystemExit(f"--llm {name} needs: pip install langchain-{name}") from exc


def format_docs(docs: list[Any]) -> str:
    """The retrieved chunks as one context string, each headed by its file name."""
    return "\n\n".join(f"[{d.metadata['file_name']}]\n{d.page_content}" for d in docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="answerdotai/answerai-colbert-small-v1",
        help="ColBERT checkpoint: hub id, local folder or 'minilm'",
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder of .txt/.md/.rst/.html files"
    )
    parser.add_argument(
        "--query", default="Which astronaut stayed in orbit during the Moon landing?"
    )
    parser.add_argument("--k", type=int, default=3, help="documents put in the prompt")
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="keep the Chroma database in this folder (default: in memory)",
    )
    parser.add_argument("--collection", default="cookbook-rag")
    parser.add_argument("--llm", choices=["fake", "openai", "ollama"], default="fake")
    parser.add_argument("--llm-model", default=None, help="model name for --llm openai/ollama")
    args = parser.parse_args(argv)

    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableParallel, RunnablePassthrough

    from latewise import LateInteractionIndex, load_encoder
    from latewise.integrations.langchain import LateInteractionRetriever

    encoder = load_encoder(args.model)
    if encoder.modality != "text":  # a ColPali-family checkpoint reads page images
        print(
            f"error: --model {args.model} loads {type(encoder).__name__}, which reads page "
            "images, not text; this recipe answers from text files and needs a text model (minilm, "
            "answerdotai/answerai-colbert-small-v1...). For PDF pages run "
            "python cookbook/llamaindex_colpali_pdf.py",
            file=sys.stderr,
        )
        return 2
    index = LateInteractionIndex(
        encoder,
        path=args.path,
        ephemeral=args.path is None,
        collection=args.collection,
    )
    report = index.add_files(args.data)  # re-running skips unchanged chunks
    print(f"Indexed {report.documents} chunks from {args.data}")
    retriever = LateInteractionRetriever(index=index, k=args.k)

    rag_chain = (
        RunnablePassthrough.assign(context=lambda x: format_docs(x["context"]))
        | ChatPromptTemplate.from_template(PROMPT)
        | make_chat_model(args.llm, args.llm_model)
        | StrOutputParser()
    )
    # Retrieve once, and return the documents with the answer written from them.
    chain = RunnableParallel(context=retriever, question=RunnablePassthrough()).assign(
        answer=rag_chain
    )
    result = chain.invoke(args.query)

    print(f"\nQuestion: {args.query}\n\nAnswer:\n{result['answer']}\n\nSources:")
    for rank, doc in enumerate(result["context"], 1):
        snippet = " ".join(doc.page_content.split())[:90]
        print(f"{rank}. [{doc.metadata['score']:.2f}] {doc.metadata['file_name']}: {snippet}...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
