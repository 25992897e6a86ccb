"""latewise: late-interaction retrieval (BERT, ColBERT, ColPali) on Chroma.

Importing the package is cheap: torch, transformers and Chroma load only when a name that needs
them is first used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from latewise.__about__ import __version__
from latewise._lazy import lazy_exports
from latewise.errors import (
    CheckpointError,
    ConcurrentWriteError,
    DimensionMismatchError,
    DocumentNotFoundError,
    DuplicateIdError,
    EmptyInputError,
    EncoderMismatchError,
    FileIngestError,
    FilterError,
    ImageLoadError,
    InvalidInputError,
    InvalidInputTypeError,
    LatewiseError,
    MissingDependencyError,
    PartialWriteError,
    QueryRuntimeError,
    SettingsMismatchError,
    StoreError,
)
from latewise.types import Hit, PageRef, Record

if TYPE_CHECKING:
    from latewise.encoders import (
        BertEncoder,
        ColBERTEncoder,
        ColPaliEncoder,
        Encoder,
        load_encoder,
    )
    from latewise.index import IndexSettings, LateInteractionIndex
    from latewise.scoring import PackedVectors, maxsim, top_k

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "Encoder": "latewise.encoders",
    "BertEncoder": "latewise.encoders",
    "ColBERTEncoder": "latewise.encoders",
    "ColPaliEncoder": "latewise.encoders",
    "load_encoder": "latewise.encoders",
    "maxsim": "latewise.scoring",
    "top_k": "latewise.scoring",
    "PackedVectors": "latewise.scoring",
    "LateInteractionIndex": "latewise.index",
    "IndexSettings": "latewise.index",
}

__all__ = [
    "BertEncoder",
    "CheckpointError",
    "ColBERTEncoder",
    "ColPaliEncoder",
    "ConcurrentWriteError",
    "DimensionMismatchError",
    "DocumentNotFoundError",
    "DuplicateIdError",
    "EmptyInputError",
    "Encoder",
    "EncoderMismatchError",
    "FileIngestError",
    "FilterError",
    "Hit",
    "ImageLoadError",
    "IndexSettings",
    "InvalidInputError",
    "InvalidInputTypeError",
    "LateInteractionIndex",
    "LatewiseError",
    "MissingDependencyError",
    "PackedVectors",
    "PageRef",
    "PartialWriteError",
    "QueryRuntimeError",
    "Record",
    "SettingsMismatchError",
    "StoreError",
    "__version__",
    "load_encoder",
    "maxsim",
    "top_k",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
