"""LlamaIndex nodes to index documents and back.

A node is stored as one index document: its id is the node id; the item encoded is the node's
content as the encoder sees it (``node.get_content(metadata_mode)`` for text encoders, the node's
image for ColPali); its metadata is what LlamaIndex's own vector stores write,
:func:`llama_index.core.vector_stores.utils.node_to_metadata_dict`: the node's metadata at top
level (so it can be filtered), ``_node_content`` (the whole node as JSON, without its embedding),
``_node_type``, and the source document's id as ``document_id`` / ``doc_id`` / ``ref_doc_id``
(for filters and :meth:`LateInteractionRetriever.delete_ref_doc`). Nodes are rebuilt with
:func:`~llama_index.core.vector_stores.utils.metadata_dict_to_node`.

Inline image bytes (``ImageNode.image``, ``MediaResource.data``) are written once to the index's
``image_dir`` (named by their SHA-256, the path kept under ``_image_file``) rather than into
Chroma, and read back on retrieval, so nodes round-trip exactly.

Collections written by latewise 0.x before this layout (``_node`` holding the node as a dict,
``_node_type``, ``_ref_doc_id``) are still read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from llama_index.core.schema import (
    BaseNode,
    Document,
    ImageDocument,
    ImageNode,
    IndexNode,
    MetadataMode,
    Node,
    TextNode,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from latewise.errors import InvalidInputError, InvalidInputTypeError
from latewise.types import Hit, PageRef, Record

if TYPE_CHECKING:
    from latewise.index import LateInteractionIndex

logger = logging.getLogger(__name__)

CONTENT_KEY = "_node_content"
TYPE_KEY = "_node_type"
IMAGE_FILE_KEY = "_image_file"  # where inline image bytes were written
#: The keys LlamaIndex writes with the source document's id; filter or delete on any of them.
REF_DOC_KEYS = ("document_id", "doc_id", "ref_doc_id")
REF_DOC_KEY = "ref_doc_id"
# The layout of latewise before it used LlamaIndex's own (read, never written).
LEGACY_NODE_KEY = "_node"
LEGACY_REF_DOC_KEY = "_ref_doc_id"
RESERVED_KEYS = frozenset(
    {CONTENT_KEY, TYPE_KEY, IMAGE_FILE_KEY, LEGACY_NODE_KEY, LEGACY_REF_DOC_KEY}
)

_NODE_CLASSES: dict[str, type[BaseNode]] = {
    cls.class_name(): cls for cls in (TextNode, ImageNode, IndexNode, Node, Document, ImageDocument)
}
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/tiff": ".tiff",
    "image/bmp": ".bmp",
}


def ref_doc_where(ref_doc_id: str) -> dict[str, Any]:
    """The ``where`` filter of the nodes of source document ``ref_doc_id`` (both layouts)."""
    return {"$or": [{REF_DOC_KEY: ref_doc_id}, {LEGACY_REF_DOC_KEY: ref_doc_id}]}


def stored_ref_doc_id(metadata: Mapping[str, Any]) -> str | None:
    """The source document id recorded in a stored node's metadata (either layout)."""
    for key in (REF_DOC_KEY, LEGACY_REF_DOC_KEY):
        value = metadata.get(key)
        if isinstance(value, str) and value and not (key == REF_DOC_KEY and value == "None"):
            return value
    return None


def nodes_to_documents(
    nodes: Sequence[BaseNode],
    index: LateInteractionIndex,
    metadata_mode: MetadataMode,
) -> tuple[list[Any], list[str], list[dict[str, Any]]]:
    """The items, ids and metadatas to write ``nodes`` into ``index``.

    Raises:
        InvalidInputTypeError: an entry is not a LlamaIndex node, or a node has no image for
            an image encoder (the message names its position and id).
        InvalidInputError: a node's metadata uses one of the keys the layout reserves, or an
            image node points to a remote URL.
    """
    if isinstance(nodes, BaseNode) or not isinstance(nodes, Sequence):
        raise InvalidInputTypeError(
            f"nodes must be a list of LlamaIndex nodes, got {type(nodes).__name__}"
        )
    image = index.encoder.modality == "image"
    items: list[Any] = []
    ids: list[str] = []
    metadatas: list[dict[str, Any]] = []
    for pos, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            raise InvalidInputTypeError(
                f"nodes must be LlamaIndex nodes; got {type(node).__name__} at position {pos}",
                [pos],
            )
        _check_keys(node, pos)
        stored = node
        image_file: str | None = None
        item: Any
        if image:
            item, image_file = _image_item(node, pos, index)
            if image_file is not None:
                stored = _without_inline_image(node)
        else:
            item = node.get_content(metadata_mode=metadata_mode)
        meta = node_to_metadata_dict(stored)
        if image_file is not None:
            meta[IMAGE_FILE_KEY] = image_file
        items.append(item)
        ids.append(node.node_id)
        metadatas.append(meta)
    return items, ids, metadatas


def _check_keys(node: BaseNode, pos: int) -> None:
    """Refuse metadata keys the layout writes itself (they would be overwritten)."""
    ref = node.ref_doc_id or "None"
    clash = sorted(RESERVED_KEYS.intersection(node.metadata)) + sorted(
        k for k in REF_DOC_KEYS if k in node.metadata and node.metadata[k] != ref
    )
    if clash:
        raise InvalidInputError(
            f"node {node.node_id!r} at position {pos} has metadata keys {clash}, which the "
            "LlamaIndex node layout reserves for the node's own data; rename them",
            [pos],
        )


def hit_to_node(hit: Hit | Record) -> BaseNode:
    """Rebuild the LlamaIndex node stored as ``hit``.

    Documents written through the adapter come back exactly as inserted. Others (written with
    :meth:`~latewise.LateInteractionIndex.add` or ``add_files``) come back as a ``TextNode``, or
    an ``ImageNode`` with ``image_path`` and the page's file path, number and size in metadata.
    """
    meta = hit.metadata
    if isinstance(meta.get(CONTENT_KEY), str):
        node = _node_of_type(meta)
        image_file = meta.get(IMAGE_FILE_KEY)
        if image_file is not None:
            _restore_image(node, str(image_file))
        return node
    if isinstance(meta.get(LEGACY_NODE_KEY), Mapping):
        return _legacy_node(hit)
    return _plain_node(hit, dict(meta))


def _node_of_type(meta: Mapping[str, Any]) -> BaseNode:
    """``metadata_dict_to_node``, keeping the classes it folds into ``TextNode``
    (``Document``, ``ImageDocument``)."""
    cls = _NODE_CLASSES.get(str(meta.get(TYPE_KEY)))
    if cls in (Document, ImageDocument):
        return cls.from_json(str(meta[CONTENT_KEY]))
    return metadata_dict_to_node(dict(meta))


def _legacy_node(hit: Hit | Record) -> BaseNode:
    """A node stored in latewise's first layout: ``_node`` (the node as a dict, its text left
    out when it was the encoded text), ``_node_type``, ``_ref_doc_id``, metadata at top level."""
    meta = dict(hit.metadata)
    fields = dict(meta.pop(LEGACY_NODE_KEY))
    node_type = meta.pop(TYPE_KEY, None)
    meta.pop(LEGACY_REF_DOC_KEY, None)
    fields["metadata"] = meta
    if "text" not in fields and hit.text is not None:
        fields["text"] = hit.text
    image_file = fields.pop(IMAGE_FILE_KEY, None)
    node = _NODE_CLASSES.get(str(node_type), TextNode).from_dict(fields)
    if image_file is not None:
        _restore_image(node, str(image_file))
    return node


def _plain_node(hit: Hit | Record, meta: dict[str, Any]) -> BaseNode:
    page = hit.page
    if page is None:
        return TextNode(id_=hit.id, text=hit.text or "", metadata=meta)
    image_path = page.image_path
    if image_path is None and page.path and Path(page.path).suffix.lower() != ".pdf":
        image_path = page.path
    meta.setdefault("file_path", page.path)
    meta.setdefault("page", page.page)
    for key in ("width", "height"):
        value = getattr(page, key)
        if value is not None:
            meta.setdefault(key, value)
    return ImageNode(id_=hit.id, text=hit.text or "", image_path=image_path, metadata=meta)


# -- images -----------------------------------------------------------------------------------


def image_source(node: BaseNode, position: int) -> str | bytes:
    """Where a node's image is: a local path, or the raw bytes of an inline image.

    Raises:
        InvalidInputTypeError: the node has no image.
        InvalidInputError: the image is only at a remote URL (download it first).
    """
    b64: str | bytes | None = None
    path: str | None = None
    url: str | None = None
    if isinstance(node, ImageNode):
        b64, path, url = node.image, node.image_path, node.image_url
    elif isinstance(node, Node) and node.image_resource is not None:
        res = node.image_resource
        b64 = res.data
        path = str(res.path) if res.path is not None else None
        url = str(res.url) if res.url is not None else None
    if b64:
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError(
                f"node {node.node_id!r} at position {position} holds an image that is not "
                f"valid base64 ({exc})",
                [position],
            ) from exc
    if path:
        return path
    if url:
        parsed = urlparse(url)
        if parsed.scheme == "file":
            return unquote(parsed.path)
        if not parsed.scheme and os.path.exists(url):
            return url
        raise InvalidInputError(
            f"node {node.node_id!r} at position {position} has its image only at {url!r}; "
            "download it and set image_path (latewise does not fetch URLs)",
            [position],
        )
    raise InvalidInputTypeError(
        f"node {node.node_id!r} at position {position} ({type(node).__name__}) has no image; "
        "an image encoder (ColPali) needs ImageNodes or documents with an image",
        [position],
    )


def load_image(source: str | bytes) -> Any:
    """A PIL image from what :func:`image_source` returned (paths are passed through)."""
    if isinstance(source, str):
        return source
    import io

    from PIL import Image

    with Image.open(io.BytesIO(source)) as im:
        im.load()
        return im.convert("RGB")


def _image_item(
    node: BaseNode, position: int, index: LateInteractionIndex
) -> tuple[Any, str | None]:
    """What the image encoder reads for ``node``, and the file its inline bytes went to."""
    source = image_source(node, position)
    if isinstance(source, bytes):
        stored = _write_image_bytes(source, Path(index.image_dir))
        return stored, stored
    meta = node.metadata
    page, file_path = meta.get("page"), meta.get("file_path")
    if isinstance(page, int) and not isinstance(page, bool) and isinstance(file_path, str):
        # A rendered page (e.g. from PDFPageReader): keep the source file and page number.
        width, height = meta.get("width"), meta.get("height")
        ref = PageRef(
            path=file_path,
            page=page,
            width=width if isinstance(width, int) else None,
            height=height if isinstance(height, int) else None,
            image_path=source,
        )
        return ref, None
    return source, None


def _without_inline_image(node: BaseNode) -> BaseNode:
    """A copy of ``node`` without its inline image bytes (they are kept on disk instead)."""
    if isinstance(node, ImageNode):
        return node.model_copy(update={"image": None})
    if isinstance(node, Node) and node.image_resource is not None:
        resource = node.image_resource.model_copy(update={"data": None})
        return node.model_copy(update={"image_resource": resource})
    return node


def _write_image_bytes(raw: bytes, folder: Path) -> str:
    """Write image bytes once under their digest; return the file's absolute path."""
    import filetype

    kind = filetype.guess(raw)
    suffix = _EXTENSIONS.get(kind.mime if kind is not None else "", ".img")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.sha256(raw).hexdigest()[:32]}{suffix}"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return str(target)


def _restore_image(node: BaseNode, image_file: str) -> None:
    try:
        raw = Path(image_file).read_bytes()
    except OSError as exc:
        logger.warning("the image of node %s is gone (%s): %s", node.node_id, image_file, exc)
        return
    b64 = base64.b64encode(raw).decode("ascii")
    if isinstance(node, ImageNode):
        node.image = b64
    elif isinstance(node, Node):
        if node.image_resource is None:
            from llama_index.core.schema import MediaResource

            node.image_resource = MediaResource(data=b64.encode("ascii"))
        else:
            node.image_resource.data = b64.encode("ascii")
