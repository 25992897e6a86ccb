"""What binds a collection to its encoder and storage settings: the config stored with it.

A collection is bound when its first document is written: the encoder's fingerprint (model,
dimension, every setting that changes vectors), where to load it from, and the storage
settings. Opening it later with another encoder or other settings is an error that says what
differs, never silent garbage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.engine.settings import IndexSettings
from latewise.errors import (
    EncoderMismatchError,
    InvalidInputError,
    InvalidInputTypeError,
    SettingsMismatchError,
    StoreError,
)
from latewise.store.chroma import ChromaStore

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

    from latewise.encoders import Encoder

__all__ = [
    "FORMAT",
    "as_encoder",
    "bind",
    "config_for",
    "load_stored_encoder",
    "open_collection",
    "stored_settings",
]

#: The layout version latewise writes; newer ones are refused with the fix. Format 2 packs the
#: stored vectors into embeddings (see :mod:`latewise.store.chroma`); collections of format 1
#: keep their base64 records and are read and written as before.
FORMAT = 2


def open_collection(
    client: ClientAPI,
    name: str,
    encoder: Encoder | str | Path | None,
    overrides: Mapping[str, Any],
    guard: Callable[[], AbstractContextManager[Any]],
) -> tuple[ChromaStore, dict[str, Any], IndexSettings, Encoder | None]:
    """Open collection ``name`` (creating its Chroma collections if new).

    An existing collection's stored settings are checked against ``overrides`` and a given
    encoder against its fingerprint; a new one takes ``overrides`` and needs an encoder, but is
    bound to it only at its first document (:func:`bind`).

    Returns:
        The store, the config (stored, or to be stored), the settings and the encoder (``None``:
        load the stored one when needed).
    """
    hnsw = overrides.get("hnsw")
    overrides = {**overrides, "hnsw": None if hnsw is None else tuple(sorted(dict(hnsw).items()))}
    store = ChromaStore(client, name, hnsw={})
    stored = store.open(create=False) if store.exists() else None
    if stored is not None:
        settings = stored_settings(name, stored, overrides)
        given = None if encoder is None else as_encoder(encoder, name, stored.get("fingerprint"))
        return store, dict(stored), settings, given
    if encoder is None:
        raise InvalidInputError(
            f"collection {name!r} has no documents yet: pass an encoder to create it, e.g. "
            "LateInteractionIndex(load_encoder('minilm'), ...)"
        )
    settings = IndexSettings(**{k: v for k, v in overrides.items() if v is not None})
    checked = as_encoder(encoder, name, None)
    store = ChromaStore(client, name, hnsw=dict(settings.hnsw))
    with guard():
        store.open(create=True)
    return store, config_for(checked, settings), settings, checked


def bind(store: ChromaStore, config: Mapping[str, Any]) -> None:
    """Record ``config`` with the collection at its first document (checked if another process
    bound it meanwhile)."""
    stored = store.open(create=False)
    if stored is None:
        store.write_config(config)
    elif stored.get("fingerprint") != config.get("fingerprint"):
        raise EncoderMismatchError(
            f"collection {store.name!r} was bound to another encoder by another process "
            "meanwhile; open it again with that encoder"
        )


def config_for(encoder: Encoder, settings: IndexSettings) -> dict[str, Any]:
    """The config recorded with a collection written by ``encoder`` with ``settings``."""
    return {
        "format": FORMAT,
        "fingerprint": encoder.fingerprint,
        "encoder_class": type(encoder).__name__,
        "encoder_source": encoder.model_name_or_path,
        "encoder_options": encoder.options,
        "modality": encoder.modality,
        "settings": settings.to_json(),
    }


def stored_settings(
    name: str, stored: Mapping[str, Any], overrides: Mapping[str, Any]
) -> IndexSettings:
    """The settings stored with collection ``name``; a given override that differs raises."""
    if int(stored.get("format", 0)) > FORMAT:
        raise StoreError(
            f"collection {name!r} was written by a newer latewise (format "
            f"{stored.get('format')}); upgrade latewise to open it"
        )
    settings = IndexSettings.from_json(stored.get("settings", {}))
    for key, value in overrides.items():
        current = getattr(settings, key)
        if value is not None and value != current:
            show = (lambda v: dict(v)) if key == "hnsw" else repr
            raise SettingsMismatchError(
                f"collection {name!r} was created with {key}={show(current)}, not "
                f"{show(value)}; leave {key} unset to use the stored value, or create a new "
                "collection"
            )
    return settings


def as_encoder(
    encoder: Encoder | str | Path, name: str, stored: Mapping[str, Any] | None
) -> Encoder:
    """``encoder`` (an :class:`Encoder`, or a name/path for ``load_encoder``), checked against
    the fingerprint ``stored`` with collection ``name``."""
    from latewise.encoders import Encoder, load_encoder

    if isinstance(encoder, str | Path):
        encoder = load_encoder(str(encoder))
    if not isinstance(encoder, Encoder):
        raise InvalidInputTypeError(
            f"encoder must be a latewise Encoder or a model name/path, got {type(encoder).__name__}"
        )
    if stored is not None and encoder.fingerprint != stored:
        given = encoder.fingerprint
        diff = sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k))
        raise EncoderMismatchError(
            f"collection {name!r} was indexed with {_describe(stored)}, but the encoder given is "
            f"{_describe(given)} (differs in: {', '.join(diff) or '?'}). Open it with the "
            "encoder that wrote it (or pass encoder=None to load it), or index into a new "
            "collection"
        )
    return encoder


def load_stored_encoder(name: str, config: Mapping[str, Any]) -> Encoder:
    """The encoder recorded with collection ``name``: its class, loaded from its model source
    with the options it was built with (backend, lengths...)."""
    from latewise import encoders

    cls = getattr(encoders, str(config.get("encoder_class")), None)
    source, options = config.get("encoder_source"), config.get("encoder_options") or {}
    if not source or cls is None or not isinstance(options, dict):
        raise StoreError(f"collection {name!r} does not record a loadable encoder; pass encoder=")
    from latewise.encoders.base import EncoderOptions

    params = inspect.signature(cls).parameters.values()
    known = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(options) - known - set(EncoderOptions.__annotations__))
    if unknown:
        raise StoreError(
            f"collection {name!r} records encoder options this latewise does not know "
            f"({', '.join(unknown)}): it was written by a newer version; upgrade latewise, or "
            "pass encoder="
        )
    return as_encoder(cls(source, **options), name, config.get("fingerprint"))


def _describe(fp: Mapping[str, Any]) -> str:
    return f"{fp.get('encoder', '?')}({fp.get('model', '?')!r}, dim={fp.get('dim', '?')})"
