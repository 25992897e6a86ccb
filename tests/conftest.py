"""Shared test setup: everything offline, tiny checkpoints built once per session."""

from __future__ import annotations

import os
import tempfile

# Nothing is downloaded in tests: the hub is never reachable here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.pop("TIKTOKEN_CACHE_DIR", None)
# Exported models and query runtimes go to a folder of this run, never the user's cache.
os.environ["LATEWISE_CACHE"] = tempfile.mkdtemp(prefix="latewise-cache-")

pytest_plugins = [
    "tests.fixtures.text_models",
    "tests.fixtures.colpali_models",
    "tests.fixtures.documents",
    "tests.fixtures.hash_encoder",
    "tests.fixtures.chroma_server",
    "tests.fixtures.spies",
]
