"""Saving and reopening a :class:`~latewise.integrations.llama_index.LateInteractionRetriever`.

The nodes live in Chroma; ``persist_dir/latewise_retriever.json`` records the collection, where
Chroma is (the embedded folder, or a server's host and port; never credentials), the page-image
folder and the retriever's settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.schema import MetadataMode
from llama_index.core.vector_stores.types import MetadataFilters

from latewise.errors import InvalidInputError, StoreError
from latewise.integrations.llama_index._query_modes import check_mode
from latewise.store.client import client_from_description, describe_client

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

    from latewise.encoders import Encoder
    from latewise.index import LateInteractionIndex
    from latewise.integrations.llama_index.retriever import LateInteractionRetriever

__all__ = ["PERSIST_FILENAME", "open_persisted", "write_persisted"]

#: The file :meth:`LateInteractionRetriever.persist` writes in its folder.
PERSIST_FILENAME = "latewise_retriever.json"
_PERSIST_FORMAT = 1


def write_persisted(retriever: LateInteractionRetriever, persist_dir: str | Path) -> None:
    """Write ``persist_dir/latewise_retriever.json`` for ``retriever`` (atomically).

    Raises:
        InvalidInputError: the index is in memory only (nothing to reopen).
    """
    index = retriever.index
    folder = Path(persist_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "format": _PERSIST_FORMAT,
        "collection": index.name,
        "chroma": _chroma_location(index),
        "image_dir": str(Path(index.image_dir).resolve()),
        "similarity_top_k": retriever.similarity_top_k,
        "filters": retriever.filters.model_dump(mode="json") if retriever.filters else None,
        "exact": retriever.exact,
        "vector_store_query_mode": check_mode(retriever.vector_store_query_mode).value,
        "vector_store_kwargs": retriever.vector_store_kwargs,
        "metadata_mode": retriever.metadata_mode.value,
    }
    target = folder / PERSIST_FILENAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(target)


def open_persisted(
    persist_dir: str | Path, encoder: Encoder | str | None, client: ClientAPI | None
) -> tuple[LateInteractionIndex, dict[str, Any]]:
    """The index and the retriever settings saved by :func:`write_persisted`.

    Args:
        persist_dir: the folder given to ``persist``.
        encoder: the encoder (``None`` loads the one stored with the collection).
        client: a Chroma client to use instead of the recorded location.

    Raises:
        InvalidInputError: the folder holds no saved retriever, or it cannot be read.
        StoreError: the file was written by a newer latewise.
    """
    from latewise.index import LateInteractionIndex

    target = Path(persist_dir) / PERSIST_FILENAME
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(
            f"{str(target)!r} does not exist: persist_dir holds no saved retriever "
            "(save one with retriever.persist(persist_dir))"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {str(target)!r}: {exc}") from exc
    if int(data.get("format", 0)) > _PERSIST_FORMAT:
        raise StoreError(f"{str(target)!r} was written by a newer latewise; upgrade latewise")
    index_args: dict[str, Any] = {"collection": data["collection"]}
    if data.get("image_dir"):
        index_args["image_dir"] = data["image_dir"]
    index = LateInteractionIndex(
        encoder, client=client or client_from_description(data["chroma"]), **index_args
    )
    settings: dict[str, Any] = {
        "similarity_top_k": data.get("similarity_top_k", DEFAULT_SIMILARITY_TOP_K),
        "filters": (
            MetadataFilters.model_validate(data["filters"]) if data.get("filters") else None
        ),
        "exact": bool(data.get("exact", False)),
        "vector_store_query_mode": data.get("vector_store_query_mode", "default"),
        "vector_store_kwargs": data.get("vector_store_kwargs"),
        "metadata_mode": MetadataMode(data.get("metadata_mode", MetadataMode.EMBED.value)),
    }
    return index, settings


def _chroma_location(index: LateInteractionIndex) -> dict[str, Any]:
    location = describe_client(index.client)
    if location["type"] == "ephemeral":
        raise InvalidInputError(
            f"collection {index.name!r} is in memory only (an ephemeral Chroma client), so there "
            "is nothing to reopen; build the index with path= or a Chroma server client to "
            "persist it"
        )
    return location
