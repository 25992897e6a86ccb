"""The in-memory first-stage table: its scan equals MaxSim over the (int8) prototypes."""

from __future__ import annotations

from collections.abc import Iterator

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
        best = table.top(query, 5, None)
        ranked = sorted(want, key=want.__getitem__, reverse=True)
        assert set(best[:2]) <= set(ranked[:6])

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
    assert table.top(query, 3, None) == []
    target = query[0:1].clone()
    table.put("match", target)
    table.put("other", -target)
    assert table.top(query, 1, None) == ["match"]
    assert table.top(query, 5, ["other"]) == ["other"]
    assert table.top(query, 5, []) == []
