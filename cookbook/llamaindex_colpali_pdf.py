"""LlamaIndex over PDFs with ColPali: retrieve page images and hand them to a multimodal LLM.

ColPali reads each PDF page as an image, so tables, charts and layout are searchable without OCR.
The recipe renders every page with :class:`PDFPageReader` (one ``ImageDocument`` per page, the
page image saved on disk), indexes the pages with a ColPali-family model through
:class:`LateInteractionRetriever.from_defaults`, retrieves the best pages for a question as
``ImageNode``\\ s, and puts them as ``ImageBlock``\\ s in one ``ChatMessage`` for a multimodal
chat LLM (GPT-4o, Claude, Gemini, Qwen2.5-VL on Ollama...).

Run it::

    python cookbook/llamaindex_colpali_pdf.py                      # a generated sample PDF
    python cookbook/llamaindex_colpali_pdf.py --pdf report.pdf slides.pdf --query "..."
    python cookbook/llamaindex_colpali_pdf.py --model vidore/colqwen2.5-v0.2
    python cookbook/llamaindex_colpali_pdf.py --llm openai   # pip install llama-index-llms-openai

Without ``--pdf`` it writes a three-page sample report (a revenue table, a bar chart, a roadmap)
so it runs offline. ``--model`` takes a hub id (``vidore/colpali-v1.3``,
``vidore/colqwen2.5-v0.2``, ``vidore/colSmol-256M``...) or a local checkpoint folder; a GPU helps
a lot (``--device cuda``). The default ``--llm mock`` is LlamaIndex's ``MockLLM``; the recipe
prints the message it sends, so you see which page images a real model would get.

On llama-index-core 0.14.23 or later, ``RetrieverQueryEngine.from_args(retriever, llm=llm,
multimodal=True)`` builds the same kind of message inside a query engine.

Needs ``pip install 'latewise[llama-index,colpali]'`` and poppler (``apt install poppler-utils``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def make_sample_pdf(path: Path) -> Path:
    """Write a three-page report (a table, a bar chart and a text page) drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    title_font, font = ImageFont.load_default(size=44), ImageFont.load_default(size=28)
    pages = []
    for title in ("Revenue by region", "Units sold by product", "Product roadmap 2025"):
        page = Image.new("RGB", (850, 1100), "white")
        ImageDraw.Draw(page).text((60, 60), title, fill="black", font=title_font)
        pages.append(page)
    table = ImageDraw.Draw(pages[0])
    rows = [
        ("Region", "Q1", "Q2", "Q3"),
        ("North", "120", "135", "150"),
        ("South", "95", "90", "110"),
        ("East", "210", "230", "260"),
        ("West", "80", "85", "70"),
    ]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            box = (60 + 180 * c, 180 + 60 * r, 240 + 180 * c, 240 + 60 * r)
            table.rectangle(box, outline="black", width=2)
            table.text((box[0] + 15, box[1] + 14), cell, fill="black", font=font)
    chart = ImageDraw.Draw(pages[1])
    for i, (name, units, colour) in enumerate(
        [("Kettle", 300, "tomato"), ("Toaster", 520, "seagreen"), ("Blender", 410, "royalblue")]
    ):
        chart.rectangle((120 + 230 * i, 900 - units, 280 + 230 * i, 900), fill=colour)
        chart.text((130 + 230 * i, 920), f"{name}: {units}", fill="black", font=font)
    notes = ImageDraw.Draw(pages[2])
    for i, line in enumerate(
        [
            "Q1: launch the smart kettle",
            "Q2: open the Berlin office",
            "Q3: recycled packaging",
            "Q4: blender with voice control",
        ]
    ):
        notes.text((80, 200 + 70 * i), f"- {line}", fill="black", font=font)
    pages[0].save(path, format="PDF", save_all=True, append_images=pages[1:], resolution=100)
    return path


def make_llm(name: str, model: str | None = None) -> Any:
    """A multimodal chat LLM: ``mock`` (offline), ``openai`` or ``ollama``."""
    if name == "mock":
        from llama_index.core.llms import MockLLM

        return MockLLM()
    try:
        if name == "openai":  # needs OPENAI_API_KEY
            from llama_index.llms.openai import OpenAI

            return OpenAI(model=model or "gpt-4o-mini")
        from llama_index.llms.ollama import Ollama

        return Ollama(model=model or "qwen2.5vl", request_timeout=300)
    except ImportError as exc:
        raise SystemExit(f"--llm {name} needs: pip install llama-index-llms-{name}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="vidore/colpali-v1.3",
        help="ColPali-family checkpoint: hub id or local folder",
    )
    parser.add_argument(
        "--pdf", type=Path, nargs="+", help="PDFs, images or folders (default: a sample)"
    )
    parser.add_argument("--query", default="Which region had the highest revenue in Q3?")
    parser.add_argument("--top-k", type=int, default=2, help="page images given to the LLM")
    parser.add_argument("--dpi", type=int, default=100, help="resolution pages are rendered at")
    parser.add_argument(
        "--device", default=None, help="cuda, mps or cpu (default: the best there is)"
    )
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="keep the Chroma database and page images here (default: temporary)",
    )
    parser.add_argument("--collection", default="cookbook-pages")
    parser.add_argument("--llm", choices=["mock", "openai", "ollama"], default="mock")
    parser.add_argument("--llm-model", default=None, help="model name for --llm openai/ollama")
    args = parser.parse_args(argv)

    from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
    from llama_index.core.schema import ImageNode

    from latewise import load_encoder
    from latewise.integrations.llama_index import LateInteractionRetriever, PDFPageReader

    encoder = load_encoder(args.model, device=args.device)
    if encoder.modality != "image":
        print(
            f"error: --model {args.model} loads {type(encoder).__name__}, which reads text, not "
            "page images; this recipe retrieves PDF pages as images and needs a ColPali-family "
            "checkpoint (vidore/colpali-v1.3, vidore/colqwen2.5-v0.2 or a local folder). "
            "Offline, for text files, run: "
            "python cookbook/llamaindex_query_engine.py --model minilm",
            file=sys.stderr,
        )
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.path or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sample = workdir / "sample_report.pdf"
        pdfs = args.pdf or [sample if sample.exists() else make_sample_pdf(sample)]

        # One ImageDocument per page; the rendered page images are kept in workdir/pages.
        pages = PDFPageReader(image_dir=workdir / "pages", dpi=args.dpi).load_data(pdfs)
        retriever = LateInteractionRetriever.from_defaults(
            documents=pages,
            encoder=encoder,
            path=args.path,
            ephemeral=args.path is None,
            collection=args.collection,
            similarity_top_k=args.top_k,
        )
        results = retriever.retrieve(args.query)  # ImageNodes, best page first

        print(f"Question: {args.query}\n\nPages retrieved by MaxSim:")
        blocks: list[Any] = [TextBlock(text="Answer the question from these pages.")]
        for rank, hit in enumerate(results, 1):
            page, meta = hit.node, hit.node.metadata
            assert isinstance(page, ImageNode)  # ColPali retrieves page images
            print(
                f"{rank}. [{hit.score:.2f}] {meta['file_name']} page {meta['page']} "
                f"({meta['width']}x{meta['height']}) -> {page.image_path}"
            )
            blocks.append(TextBlock(text=f"Page {meta['page']} of {meta['file_name']}:"))
            blocks.append(
                ImageBlock(path=Path(page.image_path), image_mimetype=page.image_mimetype)
            )
        blocks.append(TextBlock(text=f"Question: {args.query}"))
        message = ChatMessage(role="user", blocks=blocks)

        print("\nMessage sent to the LLM:")
        for block in blocks:
            shown = block.path if isinstance(block, ImageBlock) else block.text
            print(f"  [{block.block_type}] {shown}")
        answer = make_llm(args.llm, args.llm_model).chat([message])
        print(f"\nAnswer:\n{answer.message.content}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
