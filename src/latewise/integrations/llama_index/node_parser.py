"""``LateInteractionNodeParser``: split documents into nodes the encoder reads whole."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.node_parser.interface import MetadataAwareTextSplitter
from llama_index.core.node_parser.node_utils import build_nodes_from_splits
from llama_index.core.schema import BaseNode, Document, MetadataMode, TextNode
from llama_index.core.utils import get_tqdm_iterable

from latewise.errors import InvalidInputError

if TYPE_CHECKING:
    from latewise.encoders import Encoder
    from latewise.ingest import TextChunk, TokenChunker

logger = logging.getLogger(__name__)

__all__ = ["LateInteractionNodeParser"]


def chunk_node_id(i: int, doc: Any) -> str:
    """Deterministic node ids: the source document's id and the chunk's position."""
    return f"{doc.id_}#chunk={i}"


class LateInteractionNodeParser(MetadataAwareTextSplitter):
    """Split text into nodes of at most the encoder's document length, counted with its tokenizer.

    ColBERT-style encoders read a fixed number of document tokens (``doc_maxlen``) and drop the
    rest. This parser cuts with the encoder's own tokenizer (latewise's
    :class:`~latewise.ingest.TokenChunker`) so every node fits, including the metadata the
    retriever encodes with it (``metadata_mode``, ``EMBED`` by default, as LlamaIndex's vector
    indexes do): nothing is silently truncated. Cuts prefer paragraph ends, then sentence ends,
    line breaks and spaces; consecutive nodes overlap by up to ``chunk_overlap`` tokens. Nodes
    keep their source document (``SOURCE``), previous / next links and exact character offsets,
    like ``SentenceSplitter``'s.

    Instantiate:
        .. code-block:: python

            from latewise import load_encoder
            from latewise.integrations.llama_index import LateInteractionNodeParser

            parser = LateInteractionNodeParser(encoder=load_encoder("minilm"), chunk_overlap=32)
            nodes = parser.get_nodes_from_documents(documents)

    Args:
        encoder: a latewise text encoder (it has a tokenizer and ``max_document_tokens``).
        chunk_size: the most tokens a node (with its metadata) may have; at most, and by
            default, the encoder's ``max_document_tokens``.
        chunk_overlap: tokens shared by consecutive nodes (default ``chunk_size // 8``).
        metadata_mode: which metadata counts towards the length (what the retriever encodes).
        include_metadata: copy the document's metadata into its nodes.
        include_prev_next_rel: link consecutive nodes with ``PREVIOUS`` / ``NEXT``.
        callback_manager: LlamaIndex callbacks.
        id_func: how node ids are made; by default ``"<document id>#chunk=<i>"``, so parsing the
            same document again gives the same ids (re-indexing replaces, never duplicates).

    Raises:
        InvalidInputError: the encoder has no tokenizer (an image encoder), ``chunk_size`` is
            larger than the encoder reads, or the overlap is not smaller than the size.
    """

    chunk_size: int = Field(description="The most tokens of a node, metadata included.", gt=0)
    chunk_overlap: int = Field(description="Tokens shared by consecutive nodes.", ge=0)
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="The metadata that counts towards the length."
    )
    model: str = Field(default="", description="The encoder's model.")
    _chunker: TokenChunker = PrivateAttr()
    _chunkers: dict[int, TokenChunker] = PrivateAttr(default_factory=dict)

    def __init__(
        self,
        encoder: Encoder,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        include_metadata: bool = True,
        include_prev_next_rel: bool = True,
        callback_manager: CallbackManager | None = None,
        id_func: Any = None,
    ) -> None:
        from latewise.ingest import TokenChunker

        chunker = TokenChunker.from_encoder(
            encoder, chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
        fields: dict[str, Any] = {
            "chunk_size": chunker.chunk_size,
            "chunk_overlap": chunker.chunk_overlap,
            "metadata_mode": metadata_mode,
            "model": str(getattr(encoder, "model_id", type(encoder).__name__)),
            "include_metadata": include_metadata,
            "include_prev_next_rel": include_prev_next_rel,
            "callback_manager": callback_manager or CallbackManager([]),
        }
        fields["id_func"] = id_func if id_func is not None else chunk_node_id
        super().__init__(**fields)
        self._chunker = chunker
        self._chunkers = {chunker.chunk_size: chunker}

    @classmethod
    def from_defaults(
        cls,
        encoder: Encoder,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        **kwargs: Any,
    ) -> LateInteractionNodeParser:
        """The parser for ``encoder`` (same arguments as the constructor)."""
        return cls(encoder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "LateInteractionNodeParser"

    # -- splitting --------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """How many tokens the encoder's tokenizer gives ``text`` (no special tokens)."""
        return self._chunker.count_tokens(text)

    def split_text(self, text: str) -> list[str]:
        """Split ``text`` into chunks of at most ``chunk_size`` tokens."""
        return [c.text for c in self._chunks(text, 0)]

    def split_text_metadata_aware(self, text: str, metadata_str: str) -> list[str]:
        """Split ``text`` leaving room for ``metadata_str`` in every chunk."""
        overhead = self.count_tokens(metadata_str) if metadata_str else 0
        return [c.text for c in self._chunks(text, overhead)]

    def _chunks(self, text: str, overhead: int, node_id: str | None = None) -> list[TextChunk]:
        size = self.chunk_size - overhead
        if size <= 0:
            where = f" of node {node_id!r}" if node_id else ""
            raise InvalidInputError(
                f"the metadata{where} takes {overhead} tokens, as many as the chunk_size of "
                f"{self.chunk_size} the encoder reads; leave keys out of the encoded text with "
                "excluded_embed_metadata_keys, or shorten the metadata"
            )
        if size < min(50, self.chunk_size // 2):
            logger.warning(
                "the metadata%s takes %d of %d tokens; nodes will hold only %d tokens of text",
                f" of node {node_id!r}" if node_id else "",
                overhead,
                self.chunk_size,
                size,
            )
        return self._chunker_for(size).split_text(text)

    def _chunker_for(self, size: int) -> TokenChunker:
        chunker = self._chunkers.get(size)
        if chunker is None:
            from latewise.ingest import TokenChunker

            overlap = min(self.chunk_overlap, size // 2)
            chunker = TokenChunker(self._chunker.tokenizer, size, overlap)
            self._chunkers[size] = chunker
        return chunker

    def _overhead(self, node: BaseNode) -> int:
        """Tokens the node's metadata (as the retriever encodes it) adds to each chunk."""
        if self.metadata_mode == MetadataMode.NONE:
            return 0
        metadata_str = node.get_metadata_str(mode=self.metadata_mode)
        if not metadata_str:
            return 0
        template = getattr(node, "text_template", "{metadata_str}\n\n{content}")
        return self.count_tokens(template.format(metadata_str=metadata_str, content=""))

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        out: list[BaseNode] = []
        for node in get_tqdm_iterable(nodes, show_progress, "Parsing nodes"):
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            chunks = self._chunks(text, self._overhead(node), node.node_id)
            built = build_nodes_from_splits([c.text for c in chunks], node, id_func=self.id_func)
            for child, chunk in zip(built, chunks, strict=True):
                child.start_char_idx = chunk.start
                child.end_char_idx = chunk.end
            out.extend(built)
        return out

    def _postprocess_parsed_nodes(
        self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]
    ) -> list[BaseNode]:
        # The base class re-finds each node's text in its document (the first match); the
        # chunker already knows the exact offsets, so keep them.
        offsets = {
            id(n): (n.start_char_idx, n.end_char_idx) for n in nodes if isinstance(n, TextNode)
        }
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for n in nodes:
            start, end = offsets.get(id(n), (None, None))
            if start is not None and isinstance(n, TextNode):
                n.start_char_idx, n.end_char_idx = start, end
        return nodes
