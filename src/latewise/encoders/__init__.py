"""Encoders: BERT (one vector per text), ColBERT (one per token), ColPali (one per patch)."""

from __future__ import annotations

from latewise.encoders.base import Encoder, resolve_device
from latewise.encoders.bert import BertEncoder
from latewise.encoders.colbert import ColBERTEncoder
from latewise.encoders.colpali import ColPaliEncoder
from latewise.encoders.loader import load_encoder

__all__ = [
    "BertEncoder",
    "ColBERTEncoder",
    "ColPaliEncoder",
    "Encoder",
    "load_encoder",
    "resolve_device",
]
