"""Encoders: BERT (one vector per text), ColBERT (one per token), ColPali (one per patch).

Importing this package is cheap: each encoder module (and torch, transformers, colpali-engine
with it) loads when its name is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latewise._lazy import lazy_exports
from latewise.encoders.base import Encoder, load_images, resolve_device, validate_texts

if TYPE_CHECKING:
    from latewise.encoders.bert import BertEncoder
    from latewise.encoders.colbert import ColBERTEncoder
    from latewise.encoders.colpali import ColPaliEncoder, PatchGrid
    from latewise.encoders.loader import load_encoder
    from latewise.encoders.query import QueryRuntime

_LAZY = {
    "BertEncoder": "latewise.encoders.bert",
    "ColBERTEncoder": "latewise.encoders.colbert",
    "ColPaliEncoder": "latewise.encoders.colpali",
    "PatchGrid": "latewise.encoders.colpali",
    "load_encoder": "latewise.encoders.loader",
    "QueryRuntime": "latewise.encoders.query",
}

__all__ = [
    "BertEncoder",
    "ColBERTEncoder",
    "ColPaliEncoder",
    "Encoder",
    "PatchGrid",
    "QueryRuntime",
    "load_encoder",
    "load_images",
    "resolve_device",
    "validate_texts",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
