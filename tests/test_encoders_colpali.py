"""ColPaliEncoder over tiny ColPali, ColQwen2, ColQwen2.5 and ColIdefics3 checkpoints: latewise's
MaxSim over its vectors equals colpali-engine's own ``score_multi_vector`` over colpali-engine's
own embeddings, and patch grids agree with colpali-engine's similarity-map helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("colpali_engine")

from colpali_engine import models as ce_models

from latewise import ColPaliEncoder, load_encoder, maxsim
from latewise.encoders.colpali import PatchGrid
from tests.fixtures.colpali_models import page_images

QUERIES = ["what is the revenue", "figure", "sales by region in the chart on this page"]
# fixture -> (family, colpali-engine model class, processor class, (grid rows, grid cols))
FAMILIES = {
    "colpali_dir": ("colpali", "ColPali", "ColPaliProcessor", (4, 4)),
    "colqwen2_dir": ("colqwen2", "ColQwen2", "ColQwen2Processor", (2, 3)),
    "colqwen2_5_dir": ("colqwen2_5", "ColQwen2_5", "ColQwen2_5_Processor", (2, 3)),
    "colidefics3_dir": ("colidefics3", "ColIdefics3", "ColIdefics3Processor", (4, 4)),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_case(request: pytest.FixtureRequest) -> tuple[str, Path, ColPaliEncoder]:
    folder: Path = request.getfixturevalue(request.param)
    return request.param, folder, ColPaliEncoder(folder, batch_size=2)


def _engine_embeddings(folder: Path, name: str, images: list[Any]) -> tuple[Any, list, list]:
    """Queries and pages embedded by colpali-engine alone (its model, its processor)."""
    _, model_name, processor_name, _ = FAMILIES[name]
    model = getattr(ce_models, model_name).from_pretrained(str(folder)).eval()
    processor = getattr(ce_models, processor_name).from_pretrained(str(folder))
    with torch.no_grad():
        # One query per call: colpali-engine then never pads a query (see
        # test_vectors_do_not_depend_on_the_batch for why that matters).
        qs = [model(**processor.process_queries([q]))[0] for q in QUERIES]
        ps = list(model(**processor.process_images(images)))
    return processor, qs, ps


def _engine_similarity_map(
    image_emb: torch.Tensor, query_emb: torch.Tensor, n_x: int, n_y: int, image_mask: torch.Tensor
) -> torch.Tensor:
    """colpali-engine's ``get_similarity_maps_from_embeddings`` for one image (its einops
    ``rearrange(x, "(h w) c -> w h c")`` written as reshape + permute): ``[q, n_x, n_y]``."""
    patches = image_emb[image_mask]
    assert patches.shape[0] == n_x * n_y
    grid = patches.reshape(n_y, n_x, -1).permute(1, 0, 2)  # (w, h, c)
    return torch.einsum("nk,ijk->nij", query_emb, grid)


def test_scores_equal_colpali_engine(family_case: tuple[str, Path, ColPaliEncoder]) -> None:
    name, folder, enc = family_case
    images = page_images(3)
    processor, qs, ps = _engine_embeddings(folder, name, images)
    expected = processor.score_multi_vector(qs, ps, device="cpu")
    assert torch.isfinite(expected).all()
    got = maxsim(enc.encode_queries(QUERIES), enc.encode_documents(images))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_vectors_do_not_depend_on_the_batch(family_case: tuple[str, Path, ColPaliEncoder]) -> None:
    _, _, enc = family_case
    together = enc.encode_queries(QUERIES, batch_size=len(QUERIES))
    alone = [enc.encode_queries([q])[0] for q in QUERIES]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    images = [*page_images(2), *page_images(1, size=(60, 80))]
    docs = enc.encode_documents(images, batch_size=3)
    for image, doc in zip(images, docs, strict=True):
        torch.testing.assert_close(doc, enc.encode_documents([image])[0], atol=1e-6, rtol=0)


def test_rows_are_unpadded_and_normalised(family_case: tuple[str, Path, ColPaliEncoder]) -> None:
    _, _, enc = family_case
    queries = enc.encode_queries(QUERIES)
    # Queries of different lengths were padded together; the padding rows are gone.
    assert len({q.shape[0] for q in queries}) > 1
    batch = enc.processor.process_queries(QUERIES)
    assert [q.shape[0] for q in queries] == batch["attention_mask"].sum(1).tolist()
    for v in [*queries, *enc.encode_documents(page_images(2))]:
        assert v.dtype == torch.float32
        assert v.shape[1] == enc.dim == 128
        torch.testing.assert_close(v.norm(dim=-1), torch.ones(v.shape[0]), atol=1e-5, rtol=0)


def test_family_is_read_from_the_checkpoint(family_case: tuple[str, Path, ColPaliEncoder]) -> None:
    name, folder, enc = family_case
    family = FAMILIES[name][0]
    assert enc.family == family
    loaded = load_encoder(folder, batch_size=2)
    assert isinstance(loaded, ColPaliEncoder)
    assert loaded.family == family
    fp = enc.fingerprint
    assert fp["encoder"] == "ColPaliEncoder"
    assert fp["family"] == family
    assert fp["dim"] == 128
    assert fp == loaded.fingerprint
    assert str(folder) not in str(fp)


def test_image_paths_and_pil_images_give_the_same_vectors(
    family_case: tuple[str, Path, ColPaliEncoder], tmp_path: Path
) -> None:
    _, _, enc = family_case
    images = page_images(2)
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"page{i}.png"
        image.save(path)
        paths.append(path)
    from_paths = enc.encode_documents([str(paths[0]), paths[1]])
    from_images = enc.encode_documents(images)
    for a, b in zip(from_paths, from_images, strict=True):
        torch.testing.assert_close(a, b)


def test_patch_grid_matches_colpali_engine_similarity_maps(
    family_case: tuple[str, Path, ColPaliEncoder],
) -> None:
    name, folder, enc = family_case
    image = page_images(1)[0]
    grid = enc.patch_grid(image)
    assert isinstance(grid, PatchGrid)
    assert (grid.n_rows, grid.n_cols) == FAMILIES[name][3]
    assert grid.image_size == image.size
    doc = enc.encode_documents([image])[0]
    assert len(set(grid.row_index)) == grid.n_rows * grid.n_cols
    assert max(grid.row_index) < doc.shape[0]
    query = enc.encode_queries(["the chart"])[0]
    ours = grid.to_grid(query @ doc.T)  # [n_query_rows, n_rows, n_cols]

    # colpali-engine's own similarity maps over its own embeddings: [q, n_x, n_y].
    processor, _, _ = _engine_embeddings(folder, name, [image])
    model = getattr(ce_models, FAMILIES[name][1]).from_pretrained(str(folder)).eval()
    batch_images = processor.process_images([image])
    batch_query = processor.process_queries(["the chart"])
    with torch.no_grad():
        image_emb = model(**batch_images)
        query_emb = model(**batch_query)
    query_emb = query_emb[0, batch_query["attention_mask"][0].bool()]
    if name == "colidefics3_dir":
        # Tiles + a global tile: colpali-engine's own spatial rearrangement of the local tiles.
        theirs = processor.get_similarity_maps_from_embeddings(
            image_embeddings=image_emb,
            query_embeddings=query_emb.unsqueeze(0),
            n_patches=(grid.n_cols, grid.n_rows),
            image_mask=processor.get_local_image_mask(batch_images),
        )[0]
    else:
        image_mask = processor.get_image_mask(batch_images)[0]
        if name == "colpali_dir":
            size = model.config.vision_config.patch_size
        else:
            size = model.config.vision_config.spatial_merge_size
        n_x, n_y = processor.get_n_patches(image.size, size)
        assert (n_y, n_x) == (grid.n_rows, grid.n_cols)
        theirs = _engine_similarity_map(image_emb[0], query_emb, n_x, n_y, image_mask)
    torch.testing.assert_close(ours, theirs.transpose(1, 2), atol=1e-4, rtol=0)


def test_document_tokens_label_patches(family_case: tuple[str, Path, ColPaliEncoder]) -> None:
    _, _, enc = family_case
    images = page_images(2)
    labels = enc.document_tokens(images)
    vectors = enc.encode_documents(images)
    assert [len(x) for x in labels] == [v.shape[0] for v in vectors]
    grid = enc.patch_grid(images[0])
    patches = [x for x in labels[0] if x.startswith("patch ")]
    assert len(patches) == grid.n_rows * grid.n_cols
    assert labels[0][grid.row(0, 1)] == "patch 0,1"
    assert labels[0][grid.row(grid.n_rows - 1, 0)] == f"patch {grid.n_rows - 1},0"
    assert len(enc.query_tokens(["figure"])[0]) == enc.encode_queries(["figure"])[0].shape[0]


def test_forced_family_must_exist(colpali_dir: Path) -> None:
    with pytest.raises(ValueError, match="family"):
        ColPaliEncoder(colpali_dir, family="colnope")


def test_text_backends_are_refused_by_name(colpali_dir: Path) -> None:
    with pytest.raises(ValueError, match="ColPali checkpoint: backend= and quantize="):
        load_encoder(colpali_dir, backend="onnx", quantize="int8")


def test_a_forced_family_is_an_option_that_rebuilds_the_encoder(colpali_dir: Path) -> None:
    enc = ColPaliEncoder(colpali_dir, family="colpali", torch_dtype="float32")
    assert enc.options == {"family": "colpali", "torch_dtype": "float32"}
    again = ColPaliEncoder(enc.model_name_or_path, **enc.options)
    assert again.fingerprint == enc.fingerprint


# -- transformers-native retrievers (``*ForRetrieval``, the ``-hf`` checkpoints) ----------------

NATIVE = {
    "colpali_hf_dir": ("colpali-hf", "ColPaliForRetrieval", "ColPaliProcessor", (4, 4)),
    "colqwen2_hf_dir": ("colqwen2-hf", "ColQwen2ForRetrieval", "ColQwen2Processor", (2, 3)),
}


@pytest.fixture(scope="module", params=sorted(NATIVE))
def native_case(request: pytest.FixtureRequest) -> tuple[str, Path, ColPaliEncoder]:
    folder: Path = request.getfixturevalue(request.param)
    enc = load_encoder(folder, batch_size=2)
    assert isinstance(enc, ColPaliEncoder)
    return request.param, folder, enc


def test_native_scores_equal_transformers(native_case: tuple[str, Path, ColPaliEncoder]) -> None:
    """transformers' own model and processor, and its ``score_retrieval``, as the reference."""
    import transformers

    name, folder, enc = native_case
    family, model_name, processor_name, _ = NATIVE[name]
    assert enc.family == family
    assert enc.fingerprint["family"] == family
    model = getattr(transformers, model_name).from_pretrained(str(folder)).eval()
    processor = getattr(transformers, processor_name).from_pretrained(str(folder))
    images = page_images(3)
    with torch.no_grad():
        qs = [model(**processor(text=[q])).embeddings[0] for q in QUERIES]
        ps = list(model(**processor(images=images)).embeddings)
    expected = processor.score_retrieval(qs, ps)
    got = maxsim(enc.encode_queries(QUERIES), enc.encode_documents(images))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_native_rows_grid_and_batches(native_case: tuple[str, Path, ColPaliEncoder]) -> None:
    name, _, enc = native_case
    images = [*page_images(2), *page_images(1, size=(60, 80))]
    docs = enc.encode_documents(images, batch_size=3)
    for image, doc in zip(images, docs, strict=True):
        assert doc.shape[1] == enc.dim == 128
        torch.testing.assert_close(doc.norm(dim=-1), torch.ones(doc.shape[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(doc, enc.encode_documents([image])[0], atol=1e-6, rtol=0)
    together = enc.encode_queries(QUERIES, batch_size=3)
    for query, vectors in zip(QUERIES, together, strict=True):
        torch.testing.assert_close(vectors, enc.encode_queries([query])[0], atol=1e-6, rtol=0)
        assert len(enc.query_tokens([query])[0]) == vectors.shape[0]
    labels = enc.document_tokens(images[:1])[0]
    assert len(labels) == docs[0].shape[0]
    grid = enc.patch_grid(images[0])
    assert (grid.n_rows, grid.n_cols) == NATIVE[name][3]
    assert labels[grid.row(0, 1)] == "patch 0,1"
