"""Exact MaxSim: against a naive per-pair loop, padding, chunking, subsets, bf16, errors."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
    LatewiseError,
)
from latewise.scoring import (
    MaxSimScorer,
    PackedVectors,
    document_similarity,
    maximal_marginal_relevance,
    maxsim,
    maxsim_blocks,
    maxsim_flat,
    maxsim_flat_matches,
    maxsim_matches,
    top_k,
)
from latewise.scoring.exact import TILE_ROWS

BF16_UNIT = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)


def naive(queries: list[torch.Tensor], docs: list[torch.Tensor]) -> torch.Tensor:
    """The definition, one pair at a time, in float64."""
    out = torch.empty(len(queries), len(docs), dtype=torch.float64)
    for i, q in enumerate(queries):
        for j, d in enumerate(docs):
            out[i, j] = (q.double() @ d.double().t()).max(dim=1).values.sum()
    return out


def bf16_bound(queries: list[torch.Tensor], docs: list[torch.Tensor]) -> torch.Tensor:
    """A bound on |bf16 MaxSim - exact| per pair: inputs and outputs rounded to bf16."""
    out = torch.empty(len(queries), len(docs), dtype=torch.float64)
    per_row = 4 * BF16_UNIT  # 2u (inputs) + u (output) + slack for fp32 accumulation
    for i, q in enumerate(queries):
        qn = q.double().norm(dim=1)
        for j, d in enumerate(docs):
            dn = d.double().norm(dim=1).max()
            out[i, j] = (per_row * qn * dn).sum() + 1e-6
    return out


def rand_items(
    gen: torch.Generator, lengths: list[int], dim: int, scale: float = 1.0
) -> list[torch.Tensor]:
    return [torch.randn(n, dim, generator=gen) * scale for n in lengths]


# -- property test against the naive loop --------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    q_lengths=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    d_lengths=st.lists(st.integers(1, 70), min_size=1, max_size=9),
    dim=st.integers(1, 24),
    chunk_tokens=st.one_of(st.none(), st.integers(1, 80)),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    packed=st.booleans(),
    shift=st.floats(-2.0, 2.0),
)
def test_matches_naive_loop(
    seed: int,
    q_lengths: list[int],
    d_lengths: list[int],
    dim: int,
    chunk_tokens: int | None,
    dtype: torch.dtype,
    packed: bool,
    shift: float,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    queries = rand_items(gen, q_lengths, dim)
    # A shift pushes similarities to mostly positive or mostly negative values.
    docs = [d + shift * queries[0].mean(0) for d in rand_items(gen, d_lengths, dim)]
    documents = PackedVectors.from_list(docs) if packed else docs
    got = maxsim(queries, documents, dtype=dtype, chunk_tokens=chunk_tokens)
    assert got.dtype == torch.float32
    assert got.shape == (len(queries), len(docs))
    if dtype == torch.float32:
        want = naive(queries, docs)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    else:
        want = naive(queries, docs)
        assert ((got.double() - want).abs() <= bf16_bound(queries, docs)).all()
    # Any subset, in any order, with repeats, gives the same columns.
    pick = torch.randint(0, len(docs), (5,), generator=gen)
    sub = maxsim(queries, documents, dtype=dtype, chunk_tokens=chunk_tokens, doc_indices=pick)
    torch.testing.assert_close(sub, got[:, pick], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_dtypes_match_naive_on_a_mixed_corpus(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    lengths = [1, 2, 3, 15, 16, 17, 31, 33, 64, 65, 100, 130, 257, 1, 1]
    docs = rand_items(gen, lengths, 32)
    queries = rand_items(gen, [1, 5, 32], 32)
    got = maxsim(queries, [d.to(dtype) for d in docs])
    torch.testing.assert_close(got.double(), naive(queries, docs), rtol=1e-6, atol=1e-5)


def test_large_corpus_in_cache_sized_blocks_matches_naive() -> None:
    """Big enough for several chunks, worker threads and cache-sized float32 blocks."""
    gen = torch.Generator().manual_seed(14)
    lengths = torch.randint(1, 300, (90,), generator=gen).tolist()
    docs = rand_items(gen, lengths, 128)
    queries = rand_items(gen, [32, 9], 128)
    want = naive(queries, docs)
    for chunk in (None, 3_000):
        got = maxsim(queries, PackedVectors.from_list(docs), chunk_tokens=chunk)
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-4)


# -- padding must never be scored -----------------------------------------------------------------


def test_all_negative_similarities() -> None:
    """Zero padding would win every max here; only real vectors may."""
    gen = torch.Generator().manual_seed(2)
    dim = 16
    queries = [torch.rand(n, dim, generator=gen) + 0.1 for n in (1, 4, 7)]  # all positive
    # All negative, lengths chosen to fall between bucket steps (17 -> 18, 33 -> 34, 70 -> 72).
    lengths = [1, 3, 17, 33, 70, 2, 5]
    docs = [-(torch.rand(n, dim, generator=gen) + 0.1) for n in lengths]
    want = naive(queries, docs)
    assert (want < 0).all()
    zero_padded = torch.nn.utils.rnn.pad_sequence(docs, batch_first=True)
    wrong = torch.stack(
        [torch.einsum("nd,csd->cns", q, zero_padded).amax(2).sum(1) for q in queries]
    )
    assert not torch.allclose(wrong.double(), want, atol=1e-3)  # what padded-as-0 scorers return
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 0.1)):
        for chunk in (None, 1, 5, 40):
            got = maxsim(queries, docs, dtype=dtype, chunk_tokens=chunk)
            torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)
            assert (got < 0).all()


# -- one kernel: the same bits on every path ----------------------------------------------------


def _flat(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([d.shape[0] for d in docs])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    return torch.cat(docs), offsets


@pytest.mark.parametrize("dim", [7, 24, 128])
def test_kernel_equals_naive_with_different_lengths_and_negative_similarities(dim: int) -> None:
    """Documents of many lengths (one row, several tiles) in one flat matrix: nothing but a
    document's own rows can win its maximum, also when every similarity is negative."""
    gen = torch.Generator().manual_seed(21)
    lengths = [1, 2, 3, TILE_ROWS - 1, TILE_ROWS, TILE_ROWS + 1, 600, 5, 1]
    docs = rand_items(gen, lengths, dim)
    _, offsets = _flat(docs)
    for q in (rand_items(gen, [9], dim)[0], torch.rand(4, dim, generator=gen) + 0.1):
        negative = [-(d.abs() + 0.1) for d in docs] if q.min() > 0 else docs
        nflat, _ = _flat(negative)
        want = naive([q], negative)[0]
        got = maxsim_flat(q, nflat, offsets)
        assert got.dtype == torch.float32
        assert got.shape == (len(docs),)
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-5)
        if q.min() > 0:
            assert (got < 0).all()


def _every_path(q: torch.Tensor, docs: list[torch.Tensor], other: torch.Tensor) -> torch.Tensor:
    """The scores of ``q`` against ``docs`` by every path, checked equal (``==``) to
    :func:`maxsim_flat` of all documents at once, which is returned."""
    flat, offsets = _flat(docs)
    ref = maxsim_flat(q, flat, offsets)
    n = len(docs)
    pick = [n - 1, 0, 3, 3, n // 2]
    for j, d in enumerate(docs):  # a document alone
        alone = maxsim_flat(q, d, torch.tensor([0, d.shape[0]]))
        assert torch.equal(alone, ref[j : j + 1])
        score, _ = maxsim_matches(q, d)
        assert score == float(ref[j])
    sub_flat, sub_offsets = _flat([docs[j] for j in pick])  # among others, another order
    assert torch.equal(maxsim_flat(q, sub_flat, sub_offsets), ref[pick])
    counts = [d.shape[0] for d in docs]
    for block_values in (64, 5_000, 1 << 19):
        for fetch in (
            lambda a, b, r0, r1: flat[r0:r1],  # views at any address
            lambda a, b, r0, r1: flat[r0:r1].clone(),  # fresh, aligned
        ):
            got = maxsim_blocks(q, counts, fetch, block_values=block_values)
            assert torch.equal(got, ref)
    packed = PackedVectors.from_list(docs)
    for chunk in (None, 1, 300):
        both = maxsim([other, q], packed, chunk_tokens=chunk)  # with another query
        assert torch.equal(both[1], ref)
        assert torch.equal(maxsim(q, packed, chunk_tokens=chunk, doc_indices=pick)[0], ref[pick])
    assert torch.equal(maxsim(q, docs)[0], ref)  # a list, packed on the fly
    scores, matches = maxsim_flat_matches(q, flat, offsets)
    assert torch.equal(scores, ref)
    for j, d in enumerate(docs):
        assert matches[j].tolist() == (q.double() @ d.double().t()).argmax(dim=1).tolist()
        assert torch.equal(maxsim_matches(q, d)[1], matches[j])
    return ref


@pytest.mark.parametrize("dim", [7, 128])
def test_every_path_gives_the_same_bits_on_one_and_two_threads(dim: int) -> None:
    """One (query, document) pair gets bit-identical scores whichever path scores it (alone,
    among many, block by block with any block size, the public ``maxsim`` with other queries
    and subsets, with matches), on 1 and on 2 threads."""
    gen = torch.Generator().manual_seed(22)
    lengths = [*torch.randint(1, 300, (40,), generator=gen).tolist(), 1, 2, 3, 7, 700]
    docs = [torch.nn.functional.normalize(d, dim=1) for d in rand_items(gen, lengths, dim)]
    queries = [rand_items(gen, [n], dim)[0] for n in (1, 3, 32)]
    other = rand_items(gen, [5], dim)[0]
    threads = torch.get_num_threads()
    by_threads: dict[int, list[torch.Tensor]] = {}
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            by_threads[n_threads] = [_every_path(q, docs, other) for q in queries]
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(by_threads[1], by_threads[2], strict=True):
        assert torch.equal(one, two)
        assert one.dtype == torch.float32


@pytest.mark.parametrize("dim", [7, 128])
def test_documents_cut_by_block_ends_score_the_same_bits_as_alone(dim: int) -> None:
    """The corpus is scanned in blocks of rows that cut documents wherever a block ends (also
    blocks of odd sizes, and a document spanning three blocks): each document's score is the
    same bits as the document scored alone, read in place or gathered, on 1 and 2 threads."""
    gen = torch.Generator().manual_seed(23)
    lengths = [700, 1_500, 30, 2 * TILE_ROWS + 600, 1, TILE_ROWS - 1, TILE_ROWS + 1, 5, 333]
    docs = [torch.nn.functional.normalize(d, dim=1) for d in rand_items(gen, lengths, dim)]
    queries = [rand_items(gen, [n], dim)[0] for n in (1, 32)]
    packed = PackedVectors.from_list(docs)
    subset = [8, 3, 3, 0, 6]
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            alone = torch.stack(
                [
                    torch.cat([maxsim_flat(q, d, torch.tensor([0, d.shape[0]])) for d in docs])
                    for q in queries
                ]
            )
            flat, offsets = _flat(docs)
            assert torch.equal(torch.stack([maxsim_flat(q, flat, offsets) for q in queries]), alone)
            for chunk in (TILE_ROWS, 2 * TILE_ROWS, 1_500, 999, 3):
                scorer = MaxSimScorer(packed, chunk_tokens=chunk)
                assert torch.equal(scorer.score(queries), alone)
                assert torch.equal(scorer.score(queries, doc_indices=subset), alone[:, subset])
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(alone.double(), naive(queries, docs), rtol=1e-6, atol=1e-5)


# -- chunking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_tokens", [1, 2, 7, 64, 10_000])
def test_chunk_boundaries(chunk_tokens: int) -> None:
    gen = torch.Generator().manual_seed(3)
    lengths = [50, 1, 7, 8, 9, 120, 3, 64]  # several longer than the smaller chunks
    docs = rand_items(gen, lengths, 12)
    queries = rand_items(gen, [3, 6], 12)
    want = naive(queries, docs)
    packed = PackedVectors.from_list(docs)
    scorer = MaxSimScorer(packed, chunk_tokens=chunk_tokens)
    subset = [5, 0, 0, 7, 1]
    # Subset before the bucketed copy exists (gathers from the packed vectors) ...
    before = scorer.score(queries, doc_indices=subset)
    full = scorer.score(queries)
    # ... and after (gathers from the bucketed copy).
    after = scorer.score(queries, doc_indices=subset)
    torch.testing.assert_close(full.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(before, full[:, subset], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(after, full[:, subset], rtol=1e-6, atol=1e-6)


def test_scratch_memory_is_bounded_and_reused() -> None:
    gen = torch.Generator().manual_seed(4)
    docs = PackedVectors.from_list(rand_items(gen, [40] * 50, 8))
    q = rand_items(gen, [5], 8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # score on this thread only, so every buffer is counted once
    try:
        scorer = MaxSimScorer(docs, chunk_tokens=64)
        scorer.score(q)
        scorer.score(q, doc_indices=[3, 4])
        first = scorer.scratch_bytes
        assert first > 0
        scorer.score(q)
        scorer.score(q, doc_indices=[9, 1])
        assert scorer.scratch_bytes == first  # nothing new allocated for later queries
    finally:
        torch.set_num_threads(threads)


def test_worker_threads_leave_torch_settings_alone() -> None:
    """Chunks run on single-threaded workers; the caller's thread count must not change."""
    gen = torch.Generator().manual_seed(13)
    docs = rand_items(gen, [30, 70, 5, 200, 64] * 6, 16)
    q = rand_items(gen, [7, 7], 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # a size no earlier test used: a fresh pool starts now
        pooled = maxsim(q, docs, chunk_tokens=100)  # many chunks: spread over 3 workers
        seen: list[int] = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert torch.get_num_threads() == 3
        assert seen == [3]  # the process-wide default a new thread gets is untouched
        torch.set_num_threads(1)
        inline = maxsim(q, docs, chunk_tokens=100)  # same chunks, on the calling thread
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(pooled, inline)  # one kernel: the same bits on 3 threads and on 1
    torch.testing.assert_close(pooled.double(), naive(q, docs), rtol=1e-6, atol=1e-5)


def test_inside_inference_mode_with_worker_threads() -> None:
    """Encoders return inference tensors; scoring them in ``torch.inference_mode()`` (thread-local)
    on pooled workers must work, not fail writing into the inference-mode result."""
    gen = torch.Generator().manual_seed(16)
    docs = rand_items(gen, [30, 70, 5, 200, 64] * 6, 16)
    q = rand_items(gen, [7, 7], 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        flat = torch.cat(docs).half()  # scored through the kernel's scratch tiles

        def fetch(a: int, b: int, r0: int, r1: int) -> torch.Tensor:
            return flat[r0:r1].float()

        counts = [d.shape[0] for d in docs]
        for n in (2, 1):  # pooled workers, then the calling thread
            torch.set_num_threads(n)
            with torch.inference_mode():
                got = maxsim([x.clone() for x in q], [d.clone() for d in docs], chunk_tokens=100)
                blocks = maxsim_blocks(q[0], counts, fetch, block_values=2000)
            assert got.is_inference()
            torch.testing.assert_close(got.double(), naive(q, docs), rtol=0, atol=1e-5)
            # The scratch the threads grew inside inference mode still serves calls outside it.
            assert torch.equal(maxsim_blocks(q[0], counts, fetch, block_values=2000), blocks)
    finally:
        torch.set_num_threads(threads)


def test_many_queries_of_mixed_lengths_and_large_batches() -> None:
    gen = torch.Generator().manual_seed(5)
    docs = rand_items(gen, [3, 40, 17, 1, 90], 8)
    mixed = rand_items(gen, [1, 4, 32, 2], 8)
    torch.testing.assert_close(maxsim(mixed, docs).double(), naive(mixed, docs), atol=1e-5, rtol=0)
    many = rand_items(gen, [30] * 40, 8)  # 1,200 query rows: scored in several groups
    torch.testing.assert_close(maxsim(many, docs).double(), naive(many, docs), atol=1e-4, rtol=0)


def test_inputs_that_require_grad() -> None:
    gen = torch.Generator().manual_seed(15)
    q = torch.randn(4, 8, generator=gen).requires_grad_()
    docs = [torch.randn(n, 8, generator=gen).requires_grad_() for n in (3, 9)]
    got = maxsim([q], docs)
    assert not got.requires_grad
    torch.testing.assert_close(got.double(), naive([q.detach()], [d.detach() for d in docs]))


def test_tensor_input_forms() -> None:
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(4, 8, generator=gen)
    d3 = torch.randn(3, 5, 8, generator=gen)  # three documents of five rows
    want = naive([q], list(d3))
    torch.testing.assert_close(maxsim(q, d3).double(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(maxsim(q[None], list(d3)).double(), want, atol=1e-5, rtol=0)
    single = maxsim(q, d3[0])
    assert single.shape == (1, 1)


# -- bf16 -------------------------------------------------------------------------------------


def test_bf16_and_fp32_agree_on_rankings() -> None:
    gen = torch.Generator().manual_seed(7)
    lengths = torch.randint(20, 120, (1500,), generator=gen).tolist()
    docs = PackedVectors.from_list(
        [torch.nn.functional.normalize(t, dim=1) for t in rand_items(gen, lengths, 64)]
    )
    queries = [torch.nn.functional.normalize(t, dim=1) for t in rand_items(gen, [32] * 3, 64)]
    exact = maxsim(queries, docs)
    fast = maxsim(queries, docs, dtype=torch.bfloat16)
    assert (fast - exact).abs().max() < 0.05
    ranks_exact = exact.argsort(dim=1).argsort(dim=1).double()
    ranks_fast = fast.argsort(dim=1).argsort(dim=1).double()
    for i in range(len(queries)):
        spearman = torch.corrcoef(torch.stack([ranks_exact[i], ranks_fast[i]]))[0, 1]
        assert spearman > 0.999
    # bf16 scoring + exact float32 rescoring of the best candidates: the float32 top-10.
    values, indices = docs.scorer(torch.bfloat16).top_k(queries, 10)
    want_values, want_indices = top_k(exact, 10)
    assert torch.equal(indices, want_indices)
    torch.testing.assert_close(values, want_values, atol=1e-5, rtol=0)


def test_float32_scorer_top_k_is_plain_top_k() -> None:
    gen = torch.Generator().manual_seed(8)
    docs = rand_items(gen, [5, 9, 2, 7], 6)
    q = rand_items(gen, [3], 6)
    values, indices = MaxSimScorer(docs).top_k(q, 3)
    want = top_k(maxsim(q, docs), 3)
    assert torch.equal(indices, want[1])
    torch.testing.assert_close(values, want[0])


# -- top_k ------------------------------------------------------------------------------------


def test_top_k() -> None:
    scores = torch.tensor([[0.1, 0.9, -0.5, 0.3], [2.0, -1.0, 0.0, 1.0]])
    values, indices = top_k(scores, 2)
    assert indices.tolist() == [[1, 3], [0, 3]]
    torch.testing.assert_close(values, torch.tensor([[0.9, 0.3], [2.0, 1.0]]))
    values, indices = top_k(scores[0], 10)  # 1-D input, k larger than the number of documents
    assert indices.tolist() == [[1, 3, 0, 2]]
    with pytest.raises(InvalidInputError):
        top_k(scores, 0)
    with pytest.raises(InvalidInputTypeError):
        top_k(scores, 2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputTypeError):
        top_k([[0.1, 0.2]], 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        top_k(torch.zeros(2, 2, 2), 1)


# -- subsets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_subset_scoring_equals_full_columns(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(9)
    lengths = torch.randint(1, 200, (300,), generator=gen).tolist()
    docs = PackedVectors.from_list(rand_items(gen, lengths, 32))
    queries = rand_items(gen, [32, 8], 32)
    pick = torch.randint(0, 300, (60,), generator=gen)
    cold = maxsim(queries, docs, dtype=dtype, doc_indices=pick)  # no bucketed copy yet
    full = maxsim(queries, docs, dtype=dtype)
    warm = maxsim(queries, docs, dtype=dtype, doc_indices=pick.tolist())
    from_numpy = maxsim(queries, docs, dtype=dtype, doc_indices=pick.numpy())
    torch.testing.assert_close(cold, full[:, pick], atol=1e-5, rtol=0)
    torch.testing.assert_close(warm, full[:, pick], atol=1e-5, rtol=0)
    torch.testing.assert_close(from_numpy, warm, atol=0, rtol=0)
    selected = docs.select(pick)
    assert len(selected) == 60
    assert torch.equal(selected[3], docs[int(pick[3])])
    torch.testing.assert_close(
        maxsim(queries, selected, dtype=dtype), full[:, pick], atol=1e-5, rtol=0
    )


# -- maxsim_matches ---------------------------------------------------------------------------


@pytest.mark.parametrize("block_values", [64, 1_000, 1 << 18])
def test_blockwise_scoring_matches_naive(block_values: int) -> None:
    """Documents materialised a block at a time (blocks smaller than one document too) score as
    the naive loop, with every similarity negative as well, in input order."""
    gen = torch.Generator().manual_seed(17)
    docs = rand_items(gen, torch.randint(1, 120, (40,), generator=gen).tolist(), 16)
    flat = torch.cat(docs).half()  # a stored form that is not float32
    fetched: list[tuple[int, int]] = []

    def fetch(a: int, b: int, r0: int, r1: int) -> torch.Tensor:
        fetched.append((a, b))
        return flat[r0:r1].float()

    exact = [d.half().float() for d in docs]
    for q in (rand_items(gen, [9], 16)[0], -exact[3][:5]):
        got = maxsim_blocks(q, [d.shape[0] for d in docs], fetch, block_values=block_values)
        torch.testing.assert_close(got.double(), naive([q], exact)[0], rtol=1e-6, atol=1e-5)
    blocks = sorted(set(fetched))  # whole documents, each in exactly one block
    assert [a for a, _ in blocks[1:]] == [b for _, b in blocks[:-1]]
    assert (blocks[0][0], blocks[-1][1]) == (0, 40)
    assert len(blocks) > 1 or block_values > 10_000
    assert maxsim_blocks(q, [], fetch).shape == (0,)


def test_maxsim_matches() -> None:
    gen = torch.Generator().manual_seed(10)
    q = torch.randn(6, 8, generator=gen)
    d = torch.randn(11, 8, generator=gen)
    score, matches = maxsim_matches(q, d)
    sim = q @ d.t()
    assert matches.tolist() == sim.argmax(dim=1).tolist()
    assert score == pytest.approx(float(maxsim(q, d)), abs=1e-5)
    d_neg = -(torch.rand(4, 8, generator=gen) + 0.1)
    score_neg, _ = maxsim_matches(torch.rand(2, 8, generator=gen) + 0.1, d_neg)
    assert score_neg < 0
    with pytest.raises(DimensionMismatchError):
        maxsim_matches(q, torch.randn(3, 7))
    with pytest.raises(EmptyInputError):
        maxsim_matches(q, torch.randn(0, 8))
    with pytest.raises(InvalidInputError):
        maxsim_matches(q[0], d)
    with pytest.raises(InvalidInputTypeError):
        maxsim_matches(q, d.tolist())  # type: ignore[arg-type]


# -- PackedVectors ----------------------------------------------------------------------------


def test_packed_vectors_round_trip_and_cache() -> None:
    gen = torch.Generator().manual_seed(11)
    items = rand_items(gen, [3, 1, 4], 5)
    packed = PackedVectors.from_list(items)
    assert len(packed) == 3
    assert packed.dim == 5
    assert packed.lengths.tolist() == [3, 1, 4]
    assert all(torch.equal(a, b) for a, b in zip(packed.to_list(), items, strict=True))
    assert torch.equal(packed[-1], items[2])
    assert packed.to(torch.bfloat16).vectors.dtype == torch.bfloat16
    scorer = packed.scorer()
    assert packed.scorer() is scorer  # cached
    maxsim(items[:1], packed)
    assert scorer.nbytes == 0  # float32 reads the corpus in place: no copy
    fast = packed.scorer(torch.bfloat16)
    maxsim(items[:1], packed, dtype=torch.bfloat16)
    assert fast.nbytes == 8 * 5 * 2  # the bfloat16 copy, built once
    assert packed.scorer(torch.bfloat16) is fast
    packed.clear_cache()
    assert packed.scorer() is not scorer
    direct = PackedVectors(packed.vectors, torch.tensor([0, 3, 4, 8], dtype=torch.int32))
    assert direct.offsets.dtype == torch.int64


def test_concurrent_scoring_from_threads() -> None:
    gen = torch.Generator().manual_seed(12)
    docs = PackedVectors.from_list(rand_items(gen, [30, 7, 12, 90] * 20, 16))
    queries = [rand_items(gen, [n], 16) for n in (3, 9, 32, 5)]
    want = [maxsim(q, docs) for q in queries]
    got: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = maxsim(queries[i], docs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(want):
        assert torch.equal(got[i], w)  # the same bits under concurrent load


# -- bad input --------------------------------------------------------------------------------


def test_bad_inputs_raise_typed_errors() -> None:
    good = [torch.randn(3, 8)]
    with pytest.raises(DimensionMismatchError, match="dim 8 but documents have dim 7"):
        maxsim(good, [torch.randn(2, 7)])
    with pytest.raises(DimensionMismatchError, match="positions \\[1\\]"):
        maxsim(good, [torch.randn(2, 8), torch.randn(2, 9)])
    with pytest.raises(EmptyInputError):
        maxsim(good, [])
    with pytest.raises(EmptyInputError):
        maxsim([], good)
    with pytest.raises(EmptyInputError) as empty:
        maxsim(good, [torch.randn(2, 8), torch.randn(0, 8)])
    assert empty.value.positions == [1]
    with pytest.raises(InvalidInputTypeError) as wrong:
        maxsim(good, [torch.randn(2, 8), None])  # type: ignore[list-item]
    assert wrong.value.positions == [1]
    with pytest.raises(InvalidInputTypeError):
        maxsim(good, "not vectors")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputTypeError):
        maxsim(good, 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        maxsim(good, [torch.randn(8)])
    with pytest.raises(InvalidInputError):
        maxsim(good, torch.randn(2, 2, 2, 8))
    with pytest.raises(InvalidInputTypeError):
        maxsim(good, good, dtype=torch.int64)
    with pytest.raises(InvalidInputError):
        maxsim(good, good, chunk_tokens=0)
    with pytest.raises(InvalidInputError) as out_of_range:
        maxsim(good, good * 3, doc_indices=[0, 3, -1])
    assert out_of_range.value.positions == [1, 2]
    with pytest.raises(InvalidInputTypeError):
        maxsim(good, good, doc_indices=[0.5])  # type: ignore[list-item]
    with pytest.raises(InvalidInputTypeError):
        maxsim(good, good, doc_indices=torch.tensor([0.0]))
    with pytest.raises(EmptyInputError):
        maxsim(good, good, doc_indices=[])
    with pytest.raises(InvalidInputError):
        PackedVectors(torch.randn(5, 4), torch.tensor([0, 2, 6]))
    with pytest.raises(EmptyInputError):
        PackedVectors(torch.randn(5, 4), torch.tensor([0, 2, 2, 5]))
    with pytest.raises(InvalidInputError):
        MaxSimScorer(good).score(good, out=torch.empty(2, 2))
    # Every one of them is a LatewiseError and a built-in ValueError / TypeError.
    with pytest.raises(LatewiseError):
        maxsim(good, [])
    with pytest.raises(ValueError, match="encode both with the same encoder"):
        maxsim(good, [torch.randn(2, 7)])


def test_run_rows_and_offsets_gather_runs_of_rows() -> None:
    """The row numbers of runs (empty runs included), by numpy on the CPU and by torch ops (the
    accelerator path), equal the concatenated ranges."""
    from latewise.scoring.packed import _run_rows_torch, offsets_of, run_rows

    starts = torch.tensor([40, 3, 17, 0, 90])
    lengths = torch.tensor([2, 5, 0, 1, 3])
    pairs = zip(starts.tolist(), lengths.tolist(), strict=True)
    want = torch.cat([torch.arange(s, s + n) for s, n in pairs])
    assert torch.equal(run_rows(starts, lengths), want)
    assert torch.equal(_run_rows_torch(starts, lengths), want)
    empty = torch.empty(0, dtype=torch.int64)
    assert run_rows(empty, empty).numel() == 0
    assert offsets_of([2, 5, 0]).tolist() == [0, 2, 7, 7]
    assert offsets_of([]).tolist() == [0]


# -- diversity (maximal marginal relevance) ---------------------------------------------------


def test_document_similarity_is_the_symmetric_chamfer_similarity() -> None:
    g = torch.Generator().manual_seed(7)
    docs = [
        torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1) for n in (1, 5, 3, 9)
    ]
    flat = torch.cat(docs)
    offsets = torch.tensor([0, 1, 6, 9, 18])
    got = document_similarity(flat, offsets)
    directed = naive(docs, docs) / torch.tensor([len(d) for d in docs]).unsqueeze(1)
    assert torch.allclose(got.double(), (directed + directed.t()) / 2, atol=1e-5)
    assert torch.equal(got, got.t())
    assert torch.allclose(got.diagonal(), torch.ones(4), atol=1e-5)
    # One vector per document: plain cosine similarity.
    singles = torch.cat([d[:1] for d in docs])
    cos = document_similarity(singles, torch.arange(5))
    assert torch.allclose(cos, singles @ singles.t(), atol=1e-6)


def test_maximal_marginal_relevance_matches_langchains() -> None:
    from langchain_core.vectorstores.utils import maximal_marginal_relevance as reference

    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        emb = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=-1)
        query = torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0)
        lam = [0.0, 0.25, 0.5, 0.9, 1.0][trial % 5]
        got = maximal_marginal_relevance(emb @ query, emb @ emb.t(), 5, lam)
        assert got == reference(query.double().numpy(), emb.double().tolist(), lam, 5)
    assert maximal_marginal_relevance(torch.ones(3), torch.eye(3), 10, 0.5) == [0, 1, 2]
    assert maximal_marginal_relevance(torch.zeros(0), torch.zeros(0, 0), 3, 0.5) == []
