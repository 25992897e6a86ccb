"""How :class:`~latewise.integrations.llama_index.LateInteractionRetriever` turns LlamaIndex
documents into the nodes it inserts.

Text encoders split documents with their transformations (by default a
:class:`~latewise.integrations.llama_index.LateInteractionNodeParser` for the encoder); a
ColPali-family encoder reads a whole page at once, so each image document becomes one
``ImageNode``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.ingestion import run_transformations
from llama_index.core.schema import (
    BaseNode,
    Document,
    ImageDocument,
    ImageNode,
    MetadataMode,
    NodeRelationship,
    TransformComponent,
)

from latewise.errors import InvalidInputTypeError
from latewise.integrations.llama_index._nodes import image_source

if TYPE_CHECKING:
    from latewise.encoders import Encoder

__all__ = ["check_documents", "parse_documents"]


def check_documents(documents: object) -> None:
    """Refuse anything but a list of documents (a single node or document included).

    Raises:
        InvalidInputTypeError: ``documents`` is not a sequence, or is one node.
    """
    if isinstance(documents, BaseNode) or not isinstance(documents, Sequence):
        raise InvalidInputTypeError(
            f"documents must be a list of LlamaIndex documents, got {type(documents).__name__}"
        )


def parse_documents(
    documents: Sequence[Document],
    encoder: Encoder,
    transformations: Callable[[], list[TransformComponent]],
    *,
    show_progress: bool = False,
) -> list[BaseNode]:
    """The nodes of ``documents`` for ``encoder``: through the transformations (built by
    ``transformations()`` once the documents are checked), or for an image encoder without
    any, one ``ImageNode`` per document.

    Raises:
        InvalidInputTypeError: not a list of documents, or image documents without text for a
            text encoder.
    """
    check_documents(documents)
    if encoder.modality == "text":
        _check_readable_as_text(documents, encoder)
    steps = transformations()
    if encoder.modality == "image" and not steps:
        return [_image_node_from_document(d, i) for i, d in enumerate(documents)]
    return list(run_transformations(list(documents), steps, show_progress=show_progress))


def _check_readable_as_text(documents: Sequence[Document], encoder: Encoder) -> None:
    """Refuse image documents without text for a text encoder (they would index nothing)."""
    images = [
        i
        for i, d in enumerate(documents)
        if isinstance(d, ImageNode | ImageDocument)
        and not d.get_content(metadata_mode=MetadataMode.NONE).strip()
    ]
    if images:
        raise InvalidInputTypeError(
            f"the encoder {encoder.model_id!r} ({type(encoder).__name__}) reads text, and the "
            f"documents at positions {images[:10]} are images without text (e.g. PDF pages from "
            "PDFPageReader); index page images with a ColPali-family encoder "
            "(load_encoder('vidore/colpali-v1.3')), or read PDFs as text (SimpleDirectoryReader)",
            images,
        )


def _image_node_from_document(document: Document, position: int) -> ImageNode:
    """One ImageNode per image document (ColPali encodes a whole page at once); its id is
    derived from the document's, so indexing the same document again replaces it."""
    if not isinstance(document, BaseNode):
        raise InvalidInputTypeError(
            f"documents must be LlamaIndex documents; got {type(document).__name__} at "
            f"position {position}",
            [position],
        )
    source = image_source(document, position)
    image: dict[str, Any] = {}
    if isinstance(source, bytes):
        import base64

        image["image"] = base64.b64encode(source).decode("ascii")
    else:
        image["image_path"] = source
    if isinstance(document, ImageNode):
        image["image_mimetype"] = document.image_mimetype
    else:
        resource = getattr(document, "image_resource", None)
        if resource is not None:
            image["image_mimetype"] = resource.mimetype
    return ImageNode(
        id_=f"{document.id_}#image",
        text=document.get_content(metadata_mode=MetadataMode.NONE),
        metadata=dict(document.metadata),
        excluded_embed_metadata_keys=list(document.excluded_embed_metadata_keys),
        excluded_llm_metadata_keys=list(document.excluded_llm_metadata_keys),
        metadata_separator=document.metadata_separator,
        metadata_template=document.metadata_template,
        text_template=getattr(document, "text_template", "{metadata_str}\n\n{content}"),
        relationships={NodeRelationship.SOURCE: document.as_related_node_info()},
        **image,
    )
