"""What binds a collection to its encoder and storage settings: the config stored with it.

A collection is bound when its first document is written: the encoder's fingerprint (model,
dimension, every setting that changes vectors), where to load it from, and the storage
settings. Opening it later with another encoder or other settings is an error that says what
differs, never silent garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.engine.settings import IndexSettings
from latewise.errors import (
    EncoderMismatchError,
    InvalidInputTypeError,
    SettingsMismatchError,
    StoreError,
)

if TYPE_CHECKING:
    from latewise.encoders import Encoder

__all__ = ["FORMAT", "as_encoder", "config_for", "load_stored_encoder", "stored_settings"]

#: The layout version latewise writes; newer ones are refused with the fix. Format 2 packs the
#: stored vectors into embeddings (see :mod:`latewise.store.chroma`); collections of format 1
#: keep their base64 records and are read and written as before.
FORMAT = 2


def config_for(encoder: Encoder, settings: IndexSettings) -> dict[str, Any]:
    """The config recorded with a collection written by ``encoder`` with ``settings``."""
    return {
        "format": FORMAT,
        "fingerprint": encoder.fingerprint,
        "encoder_class": type(encoder).__name__,
        "encoder_source": encoder.model_name_or_path,
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
    """The encoder recorded with collection ``name`` (loaded from its model source)."""
    from latewise import encoders

    cls = getattr(encoders, str(config.get("encoder_class")), None)
    source = config.get("encoder_source")
    if not source or cls is None:
        raise StoreError(f"collection {name!r} does not record a loadable encoder; pass encoder=")
    return as_encoder(cls(source), name, config.get("fingerprint"))


def _describe(fp: Mapping[str, Any]) -> str:
    return f"{fp.get('encoder', '?')}({fp.get('model', '?')!r}, dim={fp.get('dim', '?')})"
