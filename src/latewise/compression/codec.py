"""One interface for storing a document's vectors as bytes, compressed or not.

The index keeps each document's multi-vector as one binary blob (in Chroma) and the codec that
wrote it next to the collection. :class:`VectorCodec` is what it programs against:

- :class:`Float16Codec`: the vectors as raw little-endian float16 (2 bytes per dimension);
- :class:`~latewise.compression.residual.ResidualCodec`: ColBERTv2 residual codes (~34 bytes per
  128-d vector at 2 bits).

Both write the same 16-byte blob header (see :mod:`latewise.compression._format`), serialise
themselves with safetensors (never pickle), and are restored by their ``kind`` tag with
:func:`codec_from_bytes`. A corrupt or foreign blob raises :class:`~latewise.errors.StoreError`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import torch

from latewise.compression._checks import check_matrix
from latewise.compression._format import (
    DOC_HEADER,
    KIND_FLOAT16,
    DocHeader,
    at_position,
    frombuffer_readonly,
    read_doc_header_of_kind,
    safetensors_metadata,
)
from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    StoreError,
    check_positive,
)

if TYPE_CHECKING:
    from latewise.compression.residual import ResidualCodec

__all__ = ["Float16Codec", "VectorCodec", "codec_from_bytes"]

FORMAT_VERSION = "1"


@runtime_checkable
class VectorCodec(Protocol):
    """Turns one document's ``[n, dim]`` vectors into bytes and many blobs back into vectors."""

    kind: ClassVar[str]

    @property
    def dim(self) -> int:
        """The vector dimension the codec handles."""
        ...

    @property
    def codec_id(self) -> int:
        """An id written into every blob; decoding a blob with another codec is refused."""
        ...

    @property
    def bytes_per_vector(self) -> int:
        """Stored bytes per vector, excluding the 16-byte per-document header."""
        ...

    @property
    def settings(self) -> dict[str, int | str]:
        """What identifies the codec (kind, dim, ...), for collection metadata."""
        ...

    def encode_doc(self, vectors: torch.Tensor) -> bytes:
        """One document's ``[n, dim]`` float vectors as one blob."""
        ...

    def encode_docs(self, docs: Sequence[torch.Tensor]) -> list[bytes]:
        """Many documents, one blob each (batched)."""
        ...

    def decode_doc(self, blob: bytes) -> torch.Tensor:
        """One blob back to a ``[n, dim]`` float32 tensor."""
        ...

    def decode_docs(self, blobs: Sequence[bytes]) -> list[torch.Tensor]:
        """Many blobs back to one ``[n_i, dim]`` float32 tensor each (batched)."""
        ...

    def decode_docs_flat(self, blobs: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
        """Many blobs to ``(vectors [total, dim] float32, offsets [len + 1] int64)``."""
        ...

    def columns(self, blobs: Sequence[bytes]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Many blobs, checked, in the form an index keeps in memory: named tensors with one
        row per vector (the blobs' vectors end to end), and each blob's vector count."""
        ...

    def expand(
        self, columns: Mapping[str, torch.Tensor], *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows of :meth:`columns` (any of them, in any order, the same rows of every column)
        to ``[n, dim]`` float32 vectors, written into ``out`` when given."""
        ...

    def to_bytes(self) -> bytes:
        """The codec itself as bytes (safetensors)."""
        ...


class Float16Codec:
    """Uncompressed storage: each vector as ``dim`` little-endian float16 values.

    Decoding returns float32 tensors exactly equal to ``vectors.half().float()``.

    Args:
        dim: the vector dimension.
    """

    kind: ClassVar[str] = "float16"

    def __init__(self, dim: int) -> None:
        check_positive("dim", dim)
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def codec_id(self) -> int:
        return 0

    @property
    def bytes_per_vector(self) -> int:
        return 2 * self._dim

    @property
    def settings(self) -> dict[str, int | str]:
        return {"kind": self.kind, "dim": self._dim}

    def __repr__(self) -> str:
        return f"Float16Codec(dim={self._dim})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Float16Codec) and other._dim == self._dim

    def __hash__(self) -> int:
        return hash((self.kind, self._dim))

    def _check(self, vectors: object, position: int | None = None) -> torch.Tensor:
        vectors = check_matrix(vectors, position)
        where, pos = at_position(position)
        if vectors.shape[1] != self._dim:
            raise DimensionMismatchError(
                f"vectors{where} have dim {vectors.shape[1]}, the codec stores dim {self._dim}"
            )
        if vectors.shape[0] == 0:
            raise EmptyInputError(
                f"document{where} has no vectors; a stored document needs at least one", pos
            )
        x = vectors.detach().to("cpu", torch.float16)
        if not torch.isfinite(x).all():
            raise InvalidInputError(f"vectors{where} hold NaN or values that overflow float16", pos)
        return x

    def encode_doc(self, vectors: torch.Tensor) -> bytes:
        """The 16-byte header followed by the vectors as float16."""
        x = self._check(vectors)
        head = DocHeader(KIND_FLOAT16, 0, int(x.shape[0]), self._dim, 0).pack()
        return head + x.contiguous().numpy().astype("<f2", copy=False).tobytes()

    def encode_docs(self, docs: Sequence[torch.Tensor]) -> list[bytes]:
        checked = [self._check(d, i) for i, d in enumerate(docs)]
        return [
            DocHeader(KIND_FLOAT16, 0, int(x.shape[0]), self._dim, 0).pack()
            + x.contiguous().numpy().astype("<f2", copy=False).tobytes()
            for x in checked
        ]

    def _parse(
        self, blobs: Sequence[bytes], positions: bool = True
    ) -> tuple[torch.Tensor, list[int]]:
        """Check every blob, then gather all payloads as one ``[total, dim]`` float16 tensor."""
        counts: list[int] = []
        parts: list[memoryview] = []
        for i, blob in enumerate(blobs):
            pos = i if positions else None
            head, where = read_doc_header_of_kind(
                blob,
                pos,
                KIND_FLOAT16,
                "holds residual-compressed vectors but this codec reads float16 vectors; open "
                "the collection with its stored codec",
            )
            if head.dim != self._dim:
                raise StoreError(
                    f"vector blob{where} holds dim {head.dim} vectors, the codec reads dim "
                    f"{self._dim}; the collection was written with another encoder"
                )
            expected = DOC_HEADER.size + 2 * head.n * head.dim
            if len(blob) != expected:
                raise StoreError(
                    f"vector blob{where} has {len(blob)} bytes but its header ({head.n} vectors, "
                    f"dim {head.dim}) needs {expected}; the stored document is corrupt or "
                    "truncated: re-add the document"
                )
            parts.append(memoryview(blob)[DOC_HEADER.size :])
            counts.append(head.n)
        total = sum(counts)
        if total == 0:
            return torch.empty(0, self._dim, dtype=torch.float16), counts
        raw = frombuffer_readonly(b"".join(parts), torch.float16)
        if sys.byteorder != "little":  # pragma: no cover - blobs are little-endian
            raw = torch.from_numpy(raw.numpy().byteswap())
        return raw.view(total, self._dim), counts

    def columns(self, blobs: Sequence[bytes]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """``{"vectors": [total, dim] float16}`` and each blob's vector count."""
        half, counts = self._parse(blobs)
        return {"vectors": half}, counts

    def expand(
        self, columns: Mapping[str, torch.Tensor], *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        half = columns["vectors"]
        return half.float() if out is None else out.copy_(half)

    def decode_doc(self, blob: bytes) -> torch.Tensor:
        return self._parse([blob], positions=False)[0].float()

    def decode_docs_flat(self, blobs: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
        from latewise.scoring import offsets_of

        half, counts = self._parse(blobs)
        return half.float(), offsets_of(counts)

    def decode_docs(self, blobs: Sequence[bytes]) -> list[torch.Tensor]:
        flat, offsets = self.decode_docs_flat(blobs)
        return list(torch.split(flat, (offsets[1:] - offsets[:-1]).tolist()))

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        meta = {"kind": self.kind, "format": FORMAT_VERSION, "dim": str(self._dim)}
        return bytes(save({}, metadata=meta))

    @classmethod
    def from_bytes(cls, data: bytes) -> Float16Codec:
        meta = safetensors_metadata(data)
        if meta.get("kind") != cls.kind:
            raise StoreError(f"codec bytes hold a {meta.get('kind')!r} codec, not 'float16'")
        try:
            dim = int(meta["dim"])
            return cls(dim)
        except (KeyError, ValueError, InvalidInputError) as exc:
            raise StoreError(f"float16 codec bytes are corrupt ({exc})") from exc


def codec_from_bytes(data: bytes) -> Float16Codec | ResidualCodec:
    """Restore a codec written by ``to_bytes()``, picking the class by its stored ``kind`` tag.

    Only the known kinds (``"float16"``, ``"residual"``) are accepted: no code or pickle is ever
    loaded from the bytes.

    Raises:
        StoreError: the bytes are corrupt or name an unknown kind.
    """
    from latewise.compression.residual import ResidualCodec

    kind = safetensors_metadata(data)["kind"]
    if kind == Float16Codec.kind:
        return Float16Codec.from_bytes(data)
    if kind == ResidualCodec.kind:
        return ResidualCodec.from_bytes(data)
    raise StoreError(
        f"codec bytes name an unknown kind {kind!r}; known kinds are 'float16' and 'residual' "
        "(the collection may have been written by a newer latewise)"
    )
