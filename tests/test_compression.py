"""Tests for latewise.compression: residual codes, blobs, codec serialisation, token pooling."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from latewise.compression import (
    CompressedVectors,
    Float16Codec,
    ResidualCodec,
    VectorCodec,
    batched_kmeans,
    codec_from_bytes,
    default_n_centroids,
    hierarchical_labels,
    kmeans,
    pool_vectors,
    pool_vectors_batch,
    pooled_count,
    prototypes,
    prototypes_batch,
)
from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
    StoreError,
)
from latewise.scoring import maxsim_flat
from latewise.scoring.codes import centroid_scores, codes_maxsim

HEADER = 16


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def clustered(n: int, dim: int, *, n_clusters: int = 24, noise: float = 0.5, seed: int = 0):
    """Unit vectors scattered around a few directions, like token embeddings of a corpus."""
    g = torch.Generator().manual_seed(seed)
    centres = unit(torch.randn(n_clusters, dim, generator=g))
    which = torch.randint(n_clusters, (n,), generator=g)
    return unit(centres[which] + noise * torch.randn(n, dim, generator=g) / math.sqrt(dim))


@pytest.fixture(scope="module")
def data128() -> torch.Tensor:
    return clustered(6000, 128, seed=1)


@pytest.fixture(scope="module")
def codecs128(data128: torch.Tensor) -> dict[int, ResidualCodec]:
    return {nb: ResidualCodec.fit(data128[:4000], nbits=nb, seed=0) for nb in (1, 2, 4)}


# -- sizes -----------------------------------------------------------------------------------


def test_bytes_per_vector_at_2_bits_dim_128_is_at_most_36(codecs128, data128) -> None:
    codec = codecs128[2]
    blob = codec.encode_doc(data128[4000:4100])
    per_vector = (len(blob) - HEADER) / 100
    assert per_vector == codec.bytes_per_vector == 34
    assert per_vector <= 36


@pytest.mark.parametrize(("dim", "expected"), [(128, (18, 34, 66)), (384, (50, 98, 194))])
def test_bytes_per_vector_for_each_nbits(dim: int, expected: tuple[int, int, int]) -> None:
    sample = clustered(600, dim, seed=2)
    for nbits, want in zip((1, 2, 4), expected, strict=True):
        codec = ResidualCodec.fit(sample, nbits=nbits, n_centroids=16)
        assert codec.bytes_per_vector == want
        assert len(codec.encode_doc(sample[:10])) == HEADER + 10 * want
    assert Float16Codec(dim).bytes_per_vector == 2 * dim


def test_default_centroid_count_follows_colbertv2() -> None:
    # 2 ** floor(log2(16 * sqrt(n_tokens))), capped so an id fits two bytes.
    assert default_n_centroids(40_000) == 2048  # 16 * 200 = 3200
    assert default_n_centroids(1_500_000) == 16384  # 16 * 1224.7 = 19596
    assert default_n_centroids(10**10) == 65536
    assert default_n_centroids(1) == 16


def test_fit_clamps_centroids_to_the_training_sample() -> None:
    codec = ResidualCodec.fit(clustered(100, 32), nbits=2)
    assert 1 <= codec.n_centroids <= 95  # 5 of the 100 are held out for the buckets


# -- the quantisation bound ------------------------------------------------------------------


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_compressed_vectors_stay_within_the_quantisation_bound(codecs128, data128, nbits) -> None:
    """Per dimension: the decoded residual is the weight of the bucket the true residual falls in,
    so for an inner bucket i the error is at most max(w_i - t_(i-1), t_i - w_i) (half the bucket
    width when w_i is its centre); only values beyond the outermost weights exceed that (clipped),
    and they are ~1/B of all values. Per vector: cos >= sqrt(1 - sum_d bound_d**2)."""
    codec = codecs128[nbits]
    x = data128[4000:]  # not used to fit the codec
    cv = codec.compress(x)
    raw = codec.decompress(cv, normalize=False)
    residual = x - codec.centroids[cv.codes.long()]
    codes = codec.bucket_codes(cv)
    t, w = codec.bucket_cutoffs, codec.bucket_weights
    n_buckets = 1 << nbits

    # The code is the bucket the residual falls in (t[i-1] < r <= t[i]), and decoding gives w[code].
    assert torch.equal(codes, torch.bucketize(residual, t))
    err = (raw - x).abs()
    assert torch.allclose(err, (w[codes] - residual).abs(), atol=1e-6)

    # Each value lies in its bucket [lo, hi]; the outer buckets end at the outermost weights, and
    # values beyond those are the clipped outliers.
    lo = torch.cat([w[:1], t])[codes]
    hi = torch.cat([t, w[-1:]])[codes]
    clipped = (residual < w[0]) | (residual > w[-1])
    half_width = torch.maximum(w[codes] - lo, hi - w[codes])
    assert bool((err[~clipped] <= half_width[~clipped] + 1e-6).all())
    for i in range(1, n_buckets - 1):  # below the width; half of it when w_i is the centre
        assert float(max(w[i] - t[i - 1], t[i] - w[i])) < float(t[i] - t[i - 1])
    # Clipping hits about 1/(2B) of values per side (quantiles 0.5/B and (B - 0.5)/B).
    assert float(clipped.double().mean()) <= 1.5 / n_buckets

    # Cosine: normalising keeps the angle, and an error of norm e < 1 turns a unit vector by at
    # most asin(e), so cos >= sqrt(1 - e^2) >= sqrt(1 - sum_d b_d^2), with b_d the half-width
    # bound above (the clip distance for clipped values).
    bound = torch.where(clipped, err, half_width)
    threshold = torch.sqrt((1 - (bound**2).sum(dim=1)).clamp_min(0))
    cos = (codec.decompress(cv) * x).sum(dim=1)
    assert bool((cos >= threshold - 1e-5).all())
    floor = {1: 0.9, 2: 0.95, 4: 0.99}[nbits]  # this data's bound, with margin
    assert float(threshold.mean()) > floor
    assert float(cos.mean()) > floor


def test_more_bits_give_smaller_errors(codecs128, data128) -> None:
    x = data128[4000:]
    cos = {
        nb: float((c.decompress(c.compress(x)) * x).sum(1).mean()) for nb, c in codecs128.items()
    }
    assert cos[1] < cos[2] < cos[4]


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_buckets_are_equally_filled_as_colbertv2_quantiles_make_them(
    codecs128, data128, nbits
) -> None:
    codec = codecs128[nbits]
    codes = codec.bucket_codes(codec.compress(data128[4000:]))
    share = torch.bincount(codes.flatten(), minlength=1 << nbits).double() / codes.numel()
    assert bool(((share - 1 / (1 << nbits)).abs() < 0.5 / (1 << nbits)).all()), share


def test_decompressed_rows_are_unit_float32_and_out_buffer_is_reused(codecs128, data128) -> None:
    codec = codecs128[2]
    cv = codec.compress(data128[:500])
    out = torch.empty(500, 128)
    got = codec.decompress(cv, out=out)
    assert got is out
    assert got.dtype == torch.float32
    assert torch.allclose(got.norm(dim=1), torch.ones(500), atol=1e-5)
    with pytest.raises(InvalidInputError):
        codec.decompress(cv, out=torch.empty(499, 128))


def test_dimension_not_a_multiple_of_codes_per_byte_round_trips() -> None:
    x = clustered(800, 10, n_clusters=4, seed=3)  # 10 dims at 1 bit: the last byte is padded
    codec = ResidualCodec.fit(x, nbits=1, n_centroids=8)
    assert codec.bytes_per_vector == 2 + 2
    blob = codec.encode_doc(x[:7])
    assert torch.equal(codec.decode_doc(blob), codec.decompress(codec.compress(x[:7])))


def test_fit_is_deterministic_for_a_seed(data128) -> None:
    a = ResidualCodec.fit(data128[:1500], nbits=2, seed=7)
    b = ResidualCodec.fit(data128[:1500], nbits=2, seed=7)
    assert a.codec_id == b.codec_id
    assert torch.equal(a.centroids, b.centroids)


def test_fit_can_reuse_centroids_for_another_nbits(codecs128, data128) -> None:
    two = codecs128[2]
    four = ResidualCodec.fit(data128[:4000], nbits=4, seed=0, centroids=two.centroids)
    assert torch.equal(four.centroids, two.centroids)
    assert torch.equal(four.bucket_weights, codecs128[4].bucket_weights)  # same held-out split
    with pytest.raises(DimensionMismatchError):
        ResidualCodec.fit(data128[:100], centroids=torch.randn(4, 64))


# -- blobs and serialisation -----------------------------------------------------------------


def test_codec_bytes_round_trip_bit_identically(codecs128, data128) -> None:
    for codec in codecs128.values():
        data = codec.to_bytes()
        assert isinstance(data, bytes)
        back = ResidualCodec.from_bytes(data)
        assert back.codec_id == codec.codec_id
        assert torch.equal(back.centroids, codec.centroids)
        assert torch.equal(back.bucket_cutoffs, codec.bucket_cutoffs)
        assert torch.equal(back.bucket_weights, codec.bucket_weights)
        blob = codec.encode_doc(data128[:50])
        assert torch.equal(back.decode_doc(blob), codec.decode_doc(blob))
        restored = codec_from_bytes(data)
        assert isinstance(restored, ResidualCodec)
        assert restored.settings == codec.settings
    f16 = codec_from_bytes(Float16Codec(384).to_bytes())
    assert isinstance(f16, Float16Codec)
    assert f16 == Float16Codec(384)


def test_codecs_satisfy_the_vector_codec_protocol(codecs128) -> None:
    assert isinstance(codecs128[2], VectorCodec)
    assert isinstance(Float16Codec(8), VectorCodec)


def test_compressed_vectors_bytes_round_trip(codecs128, data128) -> None:
    cv = codecs128[4].compress(data128[:33])
    back = CompressedVectors.from_bytes(cv.to_bytes())
    assert torch.equal(back.codes, cv.codes)
    assert torch.equal(back.residuals, cv.residuals)
    assert (back.dim, back.nbits, back.codec_id) == (cv.dim, cv.nbits, cv.codec_id)
    assert len(cv.to_bytes()) == HEADER + cv.nbytes


def test_float16_blobs_round_trip_exactly() -> None:
    codec = Float16Codec(64)
    docs = [unit(torch.randn(n, 64)) for n in (1, 5, 17)]
    blobs = codec.encode_docs(docs)
    assert [len(b) for b in blobs] == [HEADER + 2 * 64 * n for n in (1, 5, 17)]
    assert blobs[1] == codec.encode_doc(docs[1])
    for doc, got in zip(docs, codec.decode_docs(blobs), strict=True):
        assert got.dtype == torch.float32
        assert torch.equal(got, doc.half().float())
    flat, offsets = codec.decode_docs_flat(blobs)
    assert offsets.tolist() == [0, 1, 6, 23]
    assert flat.shape == (23, 64)


def test_residual_blobs_decode_in_one_batch(codecs128, data128) -> None:
    codec = codecs128[2]
    docs = [data128[i * 40 : i * 40 + n] for i, n in enumerate((3, 40, 1, 12))]
    blobs = codec.encode_docs(docs)
    assert blobs[2] == codec.encode_doc(docs[2])
    decoded = codec.decode_docs(blobs)
    assert [d.shape[0] for d in decoded] == [3, 40, 1, 12]
    for doc, got in zip(docs, decoded, strict=True):
        assert torch.equal(got, codec.decompress(codec.compress(doc)))
    flat, offsets = codec.decode_docs_flat(blobs)
    assert offsets.tolist() == [0, 3, 43, 44, 56]
    assert torch.equal(flat[3:43], decoded[1])
    assert codec.decode_docs([]) == []


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_blockwise_maxsim_equals_scoring_decompressed_vectors(codecs128, data128, nbits) -> None:
    """Scoring compressed documents a cache-sized block at a time (on worker threads) gives the
    scores of decompressing every document first bit for bit (one kernel), with negative
    similarities too and with documents longer than a block."""
    codec = codecs128[nbits]
    g = torch.Generator().manual_seed(3)
    lengths = [int(n) for n in torch.randint(1, 400, (60,), generator=g)] + [2500, 1]
    picks = [torch.randint(0, 6000, (n,), generator=g) for n in lengths]
    blobs = codec.encode_docs([data128[i] for i in picks])
    flat, offsets = codec.decode_docs_flat(blobs)
    for query in (data128[:32] + 0.1, -flat[:5]):  # -flat: every similarity can be negative
        want = maxsim_flat(unit(query), flat, offsets)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(2)  # several blocks on the worker pool
            got = codes_maxsim(codec, unit(query), blobs)
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(got, want)
    assert codes_maxsim(codec, data128[:3], []).shape == (0,)
    with pytest.raises(StoreError, match="position 1"):
        codes_maxsim(codec, data128[:3], [blobs[0], blobs[1][:-1]])
    with pytest.raises(DimensionMismatchError):
        codes_maxsim(codec, torch.randn(3, 64), blobs)


def test_centroid_interaction_is_maxsim_over_the_centroids(codecs128, data128) -> None:
    """PLAID's centroid interaction: each stored vector replaced by its centroid."""
    codec = codecs128[2]
    docs = [data128[i * 50 : i * 50 + n] for i, n in enumerate((3, 50, 1, 37, 12))]
    blobs = codec.encode_docs(docs)
    query = unit(data128[4000:4016] + 0.2)
    as_centroids = [codec.centroids[codec.compress(d).codes.long()] for d in docs]
    lengths = torch.tensor([d.shape[0] for d in docs])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    want = maxsim_flat(query, torch.cat(as_centroids), offsets)
    torch.testing.assert_close(centroid_scores(codec, query, blobs), want, rtol=1e-6, atol=1e-5)
    exact = codes_maxsim(codec, query, blobs)
    assert (want - exact).abs().max() < 0.1 * exact.abs().max()  # close to the exact scores
    with pytest.raises(StoreError, match="position 2"):
        centroid_scores(codec, query, [*blobs[:2], b"junk"])
    with pytest.raises(DimensionMismatchError):
        centroid_scores(codec, torch.randn(2, 64), blobs)


def _corruptions(blob: bytes) -> dict[str, bytes]:
    return {
        "truncated": blob[:-1],
        "padded": blob + b"\0",
        "header only": blob[:HEADER],
        "too short": blob[:5],
        "empty": b"",
        "bad magic": b"XX" + blob[2:],
        "bad kind": blob[:2] + b"\x09" + blob[3:],
        "count lies": blob[:4] + struct.pack("<I", 1000) + blob[8:],
    }


@pytest.mark.parametrize("which", ["residual", "float16"])
def test_corrupt_blobs_raise_store_error(codecs128, data128, which: str) -> None:
    codec: ResidualCodec | Float16Codec = codecs128[2] if which == "residual" else Float16Codec(128)
    blob = codec.encode_doc(data128[:9])
    for bad in _corruptions(blob).values():
        with pytest.raises(StoreError):
            codec.decode_doc(bad)
        with pytest.raises(StoreError, match="position 1"):
            codec.decode_docs([blob, bad])
        if which == "residual":
            with pytest.raises(StoreError):
                CompressedVectors.from_bytes(bad)
    with pytest.raises(StoreError):
        codec.decode_docs([None])  # type: ignore[list-item]


def test_blobs_from_another_codec_are_refused(codecs128, data128) -> None:
    two, four = codecs128[2], codecs128[4]
    other = ResidualCodec.fit(data128[:2000], nbits=2, seed=99)
    blob = two.encode_doc(data128[:5])
    for wrong in (four, other):
        with pytest.raises(StoreError, match="codec"):
            wrong.decode_doc(blob)
    with pytest.raises(StoreError):
        Float16Codec(128).decode_doc(blob)
    with pytest.raises(StoreError):
        two.decode_doc(Float16Codec(128).encode_doc(data128[:5]))
    with pytest.raises(StoreError):
        Float16Codec(64).decode_doc(Float16Codec(128).encode_doc(data128[:5]))


def test_out_of_range_centroid_id_is_refused() -> None:
    x = clustered(300, 16, n_clusters=4)
    codec = ResidualCodec.fit(x, nbits=2, n_centroids=8)
    blob = bytearray(codec.encode_doc(x[:2]))
    blob[HEADER : HEADER + 2] = struct.pack("<H", 65535)
    with pytest.raises(StoreError, match="centroid"):
        codec.decode_doc(bytes(blob))


def test_corrupt_codec_bytes_raise_store_error(codecs128) -> None:
    data = codecs128[2].to_bytes()
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # inside the tensor data: caught by the integrity check
    for bad in (bytes(flipped), data[:-10], data[:6], b"", b"\x00" * 64, b"not a codec at all"):
        with pytest.raises(StoreError):
            codec_from_bytes(bad)
    from safetensors.torch import save

    unknown = save({}, metadata={"kind": "pickle", "format": "1"})
    with pytest.raises(StoreError, match="unknown kind"):
        codec_from_bytes(unknown)
    with pytest.raises(StoreError):
        ResidualCodec.from_bytes(Float16Codec(8).to_bytes())


# -- input errors ----------------------------------------------------------------------------


def test_bad_inputs_raise_typed_errors(codecs128) -> None:
    codec = codecs128[2]
    with pytest.raises(DimensionMismatchError):
        codec.encode_doc(torch.randn(3, 64))
    with pytest.raises(InvalidInputError):
        codec.encode_doc(torch.full((2, 128), float("nan")))
    with pytest.raises(EmptyInputError):
        codec.encode_doc(torch.empty(0, 128))
    with pytest.raises(EmptyInputError) as info:
        codec.encode_docs([torch.randn(2, 128), torch.empty(0, 128)])
    assert info.value.positions == [1]
    with pytest.raises(InvalidInputTypeError):
        codec.encode_doc([[0.0] * 128])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        ResidualCodec.fit(torch.randn(100, 16), nbits=3)
    with pytest.raises(InvalidInputError):
        ResidualCodec.fit(torch.randn(1, 16))
    with pytest.raises(InvalidInputTypeError):
        ResidualCodec.fit(np.zeros((10, 4)))  # type: ignore[arg-type]
    with pytest.raises(EmptyInputError):
        Float16Codec(4).encode_doc(torch.empty(0, 4))
    with pytest.raises(InvalidInputError):
        Float16Codec(4).encode_doc(torch.full((1, 4), 1e6))  # overflows float16
    with pytest.raises(InvalidInputError):
        Float16Codec(0)


# -- k-means ---------------------------------------------------------------------------------


def test_kmeans_recovers_separated_clusters_deterministically() -> None:
    centres = unit(torch.randn(5, 32, generator=torch.Generator().manual_seed(4)))
    x = unit(centres.repeat_interleave(200, dim=0) + 0.02 * torch.randn(1000, 32))
    found = kmeans(x, 5, n_iters=10, seed=0)
    assert torch.equal(found, kmeans(x, 5, n_iters=10, seed=0))
    best = (unit(found) @ centres.t()).max(dim=0).values
    assert bool((best > 0.99).all())
    with pytest.raises(InvalidInputError):
        kmeans(x[:3], 4)


def test_batched_kmeans_ignores_padding() -> None:
    a, b = clustered(30, 16, seed=5), clustered(12, 16, seed=6)
    padded = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True, padding_value=9.0)
    cents, counts = batched_kmeans(padded, torch.tensor([30, 12]), 4)
    alone, alone_counts = batched_kmeans(b.unsqueeze(0), torch.tensor([12]), 4)
    assert torch.allclose(cents[1], alone[0], atol=1e-5)
    assert counts.sum(dim=1).tolist() == [30, 12]
    assert torch.equal(counts[1], alone_counts[0])


# -- token pooling ---------------------------------------------------------------------------


def _colpali_reference(embedding: torch.Tensor, pool_factor: int) -> torch.Tensor:
    """colpali-engine 0.3.18's HierarchicalTokenPooler._pool_single_embedding, line for line."""
    import warnings

    from scipy.cluster.hierarchy import fcluster, linkage

    distances = 1 - torch.mm(embedding, embedding.t()).numpy()
    with warnings.catch_warnings():  # scipy: "looks suspiciously like a distance matrix"
        warnings.simplefilter("ignore")
        Z = linkage(distances, metric="euclidean", method="ward")
    max_clusters = max(embedding.size(0) // pool_factor, 1)
    labels = fcluster(Z, t=max_clusters, criterion="maxclust") - 1
    out = []
    for cluster_id in range(max_clusters):
        idx = torch.where(torch.tensor(labels == cluster_id))
        if idx[0].numel() > 0:
            out.append(torch.nn.functional.normalize(embedding[idx].mean(dim=0), p=2, dim=-1))
    return torch.stack(out)


CASES = [(2, 2), (3, 2), (10, 2), (57, 3), (150, 2), (200, 4), (333, 5)]


@pytest.mark.parametrize(("n", "pool_factor"), CASES)
def test_pooling_matches_the_colpali_algorithm(n: int, pool_factor: int) -> None:
    x = unit(torch.randn(n, 96, generator=torch.Generator().manual_seed(n)))
    got = pool_vectors(x, pool_factor)
    want = _colpali_reference(x, pool_factor)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)


def test_pooling_matches_colpali_engines_pooler() -> None:
    pytest.importorskip("colpali_engine")
    import warnings

    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    pooler = HierarchicalTokenPooler()
    docs = [unit(torch.randn(n, 128, generator=torch.Generator().manual_seed(n))) for n, _ in CASES]
    for pool_factor in (2, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = pooler.pool_embeddings(docs, pool_factor=pool_factor)
        got = pool_vectors_batch(docs, pool_factor)
        for w, g in zip(want, got, strict=True):
            assert g.shape == w.shape
            assert torch.allclose(g, w, atol=1e-6)


@pytest.mark.parametrize("pool_factor", [2, 3, 4])
def test_pooling_shrinks_vectors_by_the_factor(pool_factor: int) -> None:
    for n in (2, 7, 64, 181):
        x = unit(torch.randn(n, 48))
        pooled = pool_vectors(x, pool_factor)
        assert pooled.shape == (max(n // pool_factor, 1), 48) == (pooled_count(n, pool_factor), 48)
        assert torch.allclose(pooled.norm(dim=1), torch.ones(pooled.shape[0]), atol=1e-5)


def test_pooled_vectors_are_normalised_cluster_means() -> None:
    x = unit(torch.randn(40, 32))
    labels = torch.from_numpy(hierarchical_labels(x, 10))
    pooled = pool_vectors(x, 4)
    for cid, row in zip(sorted(set(labels.tolist())), pooled, strict=True):
        assert torch.allclose(row, unit(x[labels == cid].mean(0)), atol=1e-6)


def test_pooling_edge_cases_and_protected_tokens() -> None:
    x = unit(torch.randn(9, 8))
    assert pool_vectors(x, 1) is x
    assert torch.equal(pool_vectors(x[:1], 3), x[:1])
    kept = pool_vectors(x, 2, protected_tokens=1)
    assert kept.shape[0] == pooled_count(9, 2, protected_tokens=1) == 1 + 4
    assert torch.equal(kept[0], x[0])
    assert pool_vectors(x.double(), 2).dtype == torch.float64
    with pytest.raises(InvalidInputError):
        pool_vectors(x, 0)
    with pytest.raises(InvalidInputError):
        pool_vectors(x, True)  # type: ignore[arg-type]
    with pytest.raises(EmptyInputError):
        pool_vectors(torch.empty(0, 8), 2)
    with pytest.raises(EmptyInputError) as info:
        pool_vectors_batch([x, torch.empty(0, 8)], 2)
    assert info.value.positions == [1]


@pytest.mark.parametrize("method", ["segments", "kmeans", "hierarchical"])
def test_prototypes_give_at_most_k_unit_vectors(method: str) -> None:
    docs = [unit(torch.randn(n, 24)) for n in (1, 3, 8, 50, 200)]
    protos = prototypes_batch(docs, 8, method=method)  # type: ignore[arg-type]
    for doc, p in zip(docs, protos, strict=True):
        assert 1 <= p.shape[0] <= 8
        assert p.shape[0] == min(8, doc.shape[0]) or method == "kmeans"
        assert torch.allclose(p.norm(dim=1), torch.ones(p.shape[0]), atol=1e-5)
    assert torch.allclose(prototypes(docs[3], 8, method=method), protos[3], atol=1e-6)  # type: ignore[arg-type]
    assert torch.allclose(protos[1], docs[1], atol=1e-6)  # n <= k: the vectors themselves


def test_segment_prototypes_are_means_of_consecutive_runs() -> None:
    doc = unit(torch.randn(10, 16, generator=torch.Generator().manual_seed(3)))
    expected = unit(torch.stack([doc[0:3].mean(0), doc[3:6].mean(0), doc[6:10].mean(0)]))
    assert torch.allclose(prototypes(doc, 3), expected, atol=1e-6)
    assert torch.allclose(prototypes(doc[:2], 3), doc[:2], atol=1e-6)


def test_kmeans_prototypes_find_a_documents_topics() -> None:
    topics = unit(torch.randn(3, 64, generator=torch.Generator().manual_seed(8)))
    doc = unit(topics.repeat_interleave(30, dim=0) + 0.05 * torch.randn(90, 64))
    protos = prototypes(doc, 3, method="kmeans")
    assert protos.shape == (3, 64)
    assert bool(((protos @ topics.t()).max(dim=0).values > 0.98).all())
    with pytest.raises(InvalidInputError):
        prototypes(doc, 0)
    with pytest.raises(InvalidInputError):
        prototypes(doc, 2, method="random")  # type: ignore[arg-type]
