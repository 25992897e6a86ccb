"""The in-memory first-stage table: its scan equals MaxSim over the (int8) prototypes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from latewise.corpus import PrototypeTable


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


def _naive(query: torch.Tensor, docs: dict[str, torch.Tensor]) -> dict[str, float]:
    return {d: float((query @ v.t()).amax(dim=1).sum()) for d, v in docs.items()}


@pytest.fixture(params=[True, False], ids=["int8-gemm", "bfloat16"])
def gemm(request: pytest.FixtureRequest) -> Iterator[bool]:
    before = PrototypeTable._int_mm_ok
    PrototypeTable._int_mm_ok = request.param
    yield request.param
    PrototypeTable._int_mm_ok = before


def test_scan_matches_maxsim_through_writes_deletes_and_wider_documents(gemm: bool) -> None:
    table = PrototypeTable(dim=24)
    docs = {f"d{i}": _unit(1 + i % 4, 24, seed=i) for i in range(40)}  # 1-4 prototypes each
    for d, v in docs.items():
        table.put(d, v)
    query = _unit(5, 24, seed=99)  # 5 query vectors: not a multiple of 8

    def check() -> None:
        got = table.scores(query)
        want = _naive(query, docs)
        assert len(table) == len(docs)
        for d, expected in want.items():
            # int8 rows (and an int8 query on the GEMM path): ~1% of one similarity per vector.
            assert got[table.slot[d]].item() == pytest.approx(expected, abs=0.02 * query.shape[0])
        best, scores = table.top(query, 5, None)
        ranked = sorted(want, key=want.__getitem__, reverse=True)
        assert set(best[:2]) <= set(ranked[:6])
        assert scores.tolist() == [got[table.slot[d]].item() for d in best]  # best first

    check()
    for i in range(0, 40, 3):  # deletions leave dead slots until the next scan compacts
        table.remove(f"d{i}")
        del docs[f"d{i}"]
    docs["d1"] = _unit(2, 24, seed=1000)  # replaced with other prototypes
    table.put("d1", docs["d1"])
    docs["wide"] = _unit(9, 24, seed=7)  # more prototypes than any before: every slot widens
    table.put("wide", docs["wide"])
    check()
    assert table.width == 9
    assert PrototypeTable._int_mm_ok is gemm  # the int8 GEMM ran; no silent fallback


def test_scan_respects_allowed_ids_and_an_empty_table(gemm: bool) -> None:
    table = PrototypeTable(dim=16)
    query = _unit(3, 16, seed=5)
    assert table.top(query, 3, None)[0] == []
    target = query[0:1].clone()
    table.put("match", target)
    table.put("other", -target)
    assert table.top(query, 1, None)[0] == ["match"]
    ids, scores = table.top(query, 5, ["other"])
    assert ids == ["other"]
    assert scores.tolist() == [table.scores(query)[table.slot["other"]]]
    assert table.top(query, 5, [])[0] == []


def _cols(n: int, value: int) -> dict[str, torch.Tensor]:
    return {
        "codes": torch.full((n,), value, dtype=torch.int16),
        "residuals": torch.full((n, 3), value, dtype=torch.uint8),
    }


def test_resident_rows_keep_every_document_through_replacement_eviction_and_compaction() -> None:
    """Documents' rows stay theirs when others are replaced, evicted or compacted away, and a
    snapshot taken before any of it still reads the rows it was taken on."""
    from latewise.corpus import ResidentRows, RowSnapshot

    arena = ResidentRows()
    lengths = {f"d{i}": 10 * (1 + (7 * i) % 13) for i in range(200)}
    for i, (d, n) in enumerate(lengths.items()):
        arena.put(d, "v1", _cols(n, i % 250))
    assert arena.row_bytes == 2 + 3
    assert arena.nbytes == sum(lengths.values()) * 5 + ResidentRows.DOC_OVERHEAD * 200

    def snap(ids: list[str]) -> RowSnapshot:
        entries = [arena.docs[d] for d in ids]
        return RowSnapshot(
            ids,
            list(range(len(ids))),
            [n for _, _, n in entries],
            arena.columns,
            torch.tensor([s for _, s, _ in entries], dtype=torch.int64),
        )

    before = snap(["d3", "d150"])
    for i in range(0, 200, 2):  # half deleted: dead rows pass a quarter, so compaction copies
        arena.remove(f"d{i}")
    arena.put("d1", "v2", _cols(4, 251))  # replaced
    used = arena.used
    arena.compact()
    assert arena.used < used
    assert arena.used == arena.live
    limit = 4000 * 5 + 40 * ResidentRows.DOC_OVERHEAD
    arena.evict(limit)  # least recently used leave
    assert 0 < arena.live * 5 + len(arena.docs) * ResidentRows.DOC_OVERHEAD <= limit
    assert "d199" in arena.docs
    assert "d1" in arena.docs
    assert "d3" not in arena.docs
    for d, (ver, _, n) in arena.docs.items():
        i = int(d[1:])
        want = 251 if d == "d1" else i % 250
        rows = snap([d]).rows(0, 1)
        assert ver == ("v2" if d == "d1" else "v1")
        assert rows["codes"].tolist() == [want] * n
        assert rows["residuals"].tolist() == [[want] * 3] * n
    old = before.rows(0, 2)  # taken before deletion and compaction: still the old rows
    assert old["codes"].tolist() == [3] * lengths["d3"] + [150] * lengths["d150"]
    assert before.offsets.tolist() == [0, lengths["d3"], lengths["d3"] + lengths["d150"]]


def test_large_loads_hand_freed_memory_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platform

    from latewise import LateInteractionIndex, corpus
    from tests.fixtures.hash_encoder import HashEncoder

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert corpus.release_free_memory() is True
    calls: list[str] = []
    monkeypatch.setattr(corpus, "release_free_memory", lambda: calls.append("x") or True)
    monkeypatch.setattr(corpus, "_RELEASE_AFTER_DOCS", 3)
    monkeypatch.setattr(corpus, "_RELEASE_AFTER_BYTES", 1)
    texts = [f"document number {i} about topic {i % 3}" for i in range(6)]
    LateInteractionIndex(HashEncoder(), path=tmp_path, collection="mem").add(texts)
    reopened = LateInteractionIndex(HashEncoder(), path=tmp_path, collection="mem")
    reopened.corpus.refresh()  # loads six documents' records and prototypes: released
    assert len(calls) == 1
    reopened.search("topic 1", k=2)  # reads stored vectors past the byte threshold: released
    assert len(calls) == 2
    reopened.search("topic 1", k=2)  # everything needed is resident: nothing read
    assert len(calls) == 2
