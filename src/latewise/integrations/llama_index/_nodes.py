"""LlamaIndex nodes to index documents and back.

A node is stored as one index document: its id is the node id; the item encoded is the node's
content as the encoder sees it (``node.get_content(metadata_mode)`` for text encoders, the node's
image for ColPali); its metadata is the node's own metadata at top level (so it can be filtered)
plus three keys of this adapter:

- ``_node``: the rest of the node as JSON (relationships, excluded keys, templates, char offsets,
  image path...), without its metadata, embedding, and text when the text is what was encoded;
- ``_node_type``: the node class (``TextNode``, ``ImageNode``, ``Document``...);
- ``_ref_doc_id``: the id of the source document (when the node has one), for filters and
  :meth:`LateInteractionRetriever.delete_ref_doc`.

Inline image bytes (``ImageNode.image``, ``MediaResource.data``) are written once to the index's
``image_dir`` (named by their SHA-256) rather than into Chroma, and read back on retrieval, so
nodes round-trip exactly.
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

from latewise.errors import InvalidInputError, InvalidInputTypeError
from latewise.types import Hit, PageRef

if TYPE_CHECKING:
    from latewise.index import LateInteractionIndex

logger = logging.getLogger(__name__)

NODE_KEY = "_node"
TYPE_KEY = "_node_type"
REF_DOC_KEY = "_ref_doc_id"
_IMAGE_FILE = "_image_file"  # inside NODE_KEY: where inline image bytes were written
RESERVED_KEYS = frozenset({NODE_KEY, TYPE_KEY, REF_DOC_KEY})

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


def nodes_to_documents(
    nodes: Sequence[BaseNode],
    index: LateInteractionIndex,
    metadata_mode: MetadataMode,
) -> tuple[list[Any], list[str], list[dict[str, Any]]]:
    """The items, ids and metadatas to write ``nodes`` into ``index``.

    Raises:
        InvalidInputTypeError: an entry is not a LlamaIndex node, or a node has no image for
            an image encoder (the message names its position and id).
        InvalidInputError: a node's metadata uses one of the adapter's reserved keys, or an
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
        clash = sorted(RESERVED_KEYS.intersection(node.metadata))
        if clash:
            raise InvalidInputError(
                f"node {node.node_id!r} at position {pos} has metadata keys {clash}, which "
                "latewise reserves for the node's own data; rename them",
                [pos],
            )
        data = node.model_dump(mode="json")
        data.pop("metadata", None)
        data["embedding"] = None
        item: Any
        if image:
            item = _image_item(node, data, pos, index)
        else:
            item = node.get_content(metadata_mode=metadata_mode)
            if isinstance(node, TextNode) and data.get("text") == item:
                del data["text"]  # the index keeps it as the document text
        meta: dict[str, Any] = {**node.metadata, NODE_KEY: data, TYPE_KEY: node.class_name()}
        if node.ref_doc_id is not None:
            meta[REF_DOC_KEY] = node.ref_doc_id
        items.append(item)
        ids.append(node.node_id)
        metadatas.append(meta)
    return items, ids, metadatas


def hit_to_node(hit: Hit) -> BaseNode:
    """Rebuild the LlamaIndex node stored as ``hit``.

    Documents written through the adapter come back exactly as inserted. Others (written with
    :meth:`~latewise.LateInteractionIndex.add` or ``add_files``) come back as a ``TextNode``, or
    an ``ImageNode`` with ``image_path`` and the page's file path, number and size in metadata.
    """
    meta = dict(hit.metadata)
    data = meta.pop(NODE_KEY, None)
    node_type = meta.pop(TYPE_KEY, None)
    meta.pop(REF_DOC_KEY, None)
    if not isinstance(data, Mapping):
        return _plain_node(hit, meta)
    fields = dict(data)
    fields["metadata"] = meta
    if "text" not in fields and hit.text is not None:
        fields["text"] = hit.text
    image_file = fields.pop(_IMAGE_FILE, None)
    if image_file is not None:
        _restore_image(fields, str(image_file), node_type)
    cls = _NODE_CLASSES.get(str(node_type), TextNode)
    return cls.from_dict(fields)


def _plain_node(hit: Hit, meta: dict[str, Any]) -> BaseNode:
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
    node: BaseNode, data: dict[str, Any], position: int, index: LateInteractionIndex
) -> Any:
    source = image_source(node, position)
    if isinstance(source, bytes):
        stored = _write_image_bytes(source, Path(index.image_dir))
        data[_IMAGE_FILE] = stored
        if isinstance(node, ImageNode):
            data["image"] = None
        return stored
    meta = node.metadata
    page, file_path = meta.get("page"), meta.get("file_path")
    if isinstance(page, int) and not isinstance(page, bool) and isinstance(file_path, str):
        # A rendered page (e.g. from PDFPageReader): keep the source file and page number.
        width, height = meta.get("width"), meta.get("height")
        return PageRef(
            path=file_path,
            page=page,
            width=width if isinstance(width, int) else None,
            height=height if isinstance(height, int) else None,
            image_path=source,
        )
    return source


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


def _restore_image(fields: dict[str, Any], image_file: str, node_type: Any) -> None:
    try:
        raw = Path(image_file).read_bytes()
    except OSError as exc:
        logger.warning("the image of node %s is gone (%s): %s", fields.get("id_"), image_file, exc)
        return
    b64 = base64.b64encode(raw).decode("ascii")
    if node_type == ImageNode.class_name():
        fields["image"] = b64
    else:
        resource = dict(fields.get("image_resource") or {})
        resource["data"] = b64
        fields["image_resource"] = resource
