"""``MaxSimRerank``: rerank the nodes of any LlamaIndex retriever by exact MaxSim."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from latewise.errors import InvalidInputError, InvalidInputTypeError, check_positive
from latewise.integrations.llama_index._nodes import image_source, load_image

if TYPE_CHECKING:
    from latewise.encoders import Encoder

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

__all__ = ["MaxSimRerank"]


class MaxSimRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes by exact MaxSim with a late-interaction encoder.

    Place it after any retriever (BM25, a vector index, a latewise retriever...): it encodes the
    query and the candidate nodes in batches and orders them by MaxSim, the late-interaction
    score (:func:`latewise.rerank.rerank`). Text nodes are scored on
    ``node.get_content(metadata_mode)`` (``EMBED``, like LlamaIndex's core rerankers) with a
    ColBERT or BERT encoder; with a ColPali encoder, image nodes are scored on their image
    (``image``, ``image_path``, or a ``file://`` ``image_url``). It emits LlamaIndex's
    ``ReRankStartEvent`` / ``ReRankEndEvent`` and the ``RERANKING`` callback event, like the core
    rerankers.

    Instantiate:
        .. code-block:: python

            from latewise import load_encoder
            from latewise.integrations.llama_index import MaxSimRerank

            rerank = MaxSimRerank(encoder=load_encoder("minilm"), top_n=3)
            engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])

    Args:
        encoder: a latewise encoder, or a name / path for :func:`~latewise.load_encoder`.
        top_n: how many nodes to keep (``None``: all, reordered).
        keep_retrieval_score: keep each node's previous score in
            ``node.metadata["retrieval_score"]``.
        batch_size: candidates encoded per forward pass (the encoder's default otherwise).
        metadata_mode: which metadata is scored with a text node's content.
        callback_manager: LlamaIndex callbacks.
    """

    top_n: int | None = Field(default=5, description="How many nodes to keep (None: all).")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the retrieval score in metadata['retrieval_score']."
    )
    batch_size: int | None = Field(default=None, description="Candidates encoded per batch.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Metadata scored with a text node's content."
    )
    model: str = Field(default="", description="The encoder's model.")
    _encoder: Encoder = PrivateAttr()

    def __init__(
        self,
        encoder: Encoder | str | Path,
        top_n: int | None = 5,
        keep_retrieval_score: bool = False,
        batch_size: int | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        from latewise.encoders import Encoder, load_encoder

        if isinstance(encoder, str | Path):
            encoder = load_encoder(encoder)
        if not isinstance(encoder, Encoder):
            raise InvalidInputTypeError(
                f"encoder must be a latewise Encoder or a model name/path, got "
                f"{type(encoder).__name__}"
            )
        if top_n is not None:  # None: keep every node
            check_positive("top_n", top_n)
        fields: dict[str, Any] = {
            "top_n": top_n,
            "keep_retrieval_score": keep_retrieval_score,
            "batch_size": batch_size,
            "metadata_mode": metadata_mode,
            "model": encoder.model_id,
            "callback_manager": callback_manager or CallbackManager(),
        }
        super().__init__(**fields)
        self._encoder = encoder

    @property
    def encoder(self) -> Encoder:
        """The latewise encoder that scores the nodes."""
        return self._encoder

    @classmethod
    def class_name(cls) -> str:
        return "MaxSimRerank"

    def _candidates(self, nodes: list[NodeWithScore]) -> list[Any]:
        if self._encoder.modality == "image":
            return [load_image(image_source(n.node, i)) for i, n in enumerate(nodes)]
        return [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        from latewise.rerank import rerank

        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n if self.top_n is not None else len(nodes),
                model_name=self.model,
            )
        )
        if query_bundle is None:
            raise InvalidInputError("MaxSimRerank needs the query: pass query_bundle or query_str")
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        candidates = self._candidates(nodes)
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            results = rerank(
                self._encoder,
                query_bundle.query_str,
                candidates,
                top_n=self.top_n,
                batch_size=self.batch_size,
            )
            reranked: list[NodeWithScore] = []
            for r in results:
                old = nodes[r.index]
                if self.keep_retrieval_score:
                    old.node.metadata["retrieval_score"] = old.score
                reranked.append(NodeWithScore(node=old.node, score=r.score))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked
