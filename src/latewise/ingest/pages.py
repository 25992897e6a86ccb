"""PDF pages and images to RGB page images, streamed one page at a time.

PDFs are rendered with poppler through ``pdf2image``: the page count comes from ``pdfinfo``, and
pages are rendered a few at a time (``first_page`` / ``last_page``), so a 1,000-page PDF never
sits in memory whole. Images (PNG, JPEG, WebP, TIFF, BMP, GIF) are opened with Pillow; each frame
of a multi-page TIFF is a page. Every page can be saved into a managed folder under a
deterministic name, so re-indexing the same file reuses the same image files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from latewise.errors import FileIngestError, InvalidInputError, MissingDependencyError
from latewise.ingest.sources import (
    ErrorMode,
    IngestIterator,
    IngestReport,
    PathLike,
    classify_path,
    iter_sources,
    run_sources,
    validate_error_mode,
)
from latewise.types import PageRef

if TYPE_CHECKING:
    from PIL.Image import Image

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DPI",
    "PageRecord",
    "PageRenderer",
    "iter_pages",
    "load_page_image",
    "page_image_path",
    "render_page",
]

#: The default rendering resolution for PDF pages (dots per inch).
DEFAULT_DPI = 100
#: The default number of PDF pages rendered per poppler call.
DEFAULT_PAGE_BATCH_SIZE = 4

ImageFormat = Literal["png", "jpeg"]
_EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg"}
_POPPLER_HINT = (
    "Install poppler: `apt-get install poppler-utils` (Debian/Ubuntu), `brew install poppler` "
    "(macOS) or `conda install -c conda-forge poppler`, or pass poppler_path= the folder that "
    "holds pdfinfo and pdftoppm"
)


@dataclass(frozen=True)
class PageRecord:
    """One rendered page.

    Attributes:
        image: the page as an RGB Pillow image.
        ref: where the page comes from: source file, 1-based page number, size in pixels and
            the saved image's path (``None`` when no ``image_dir`` was given).
    """

    image: Image
    ref: PageRef


def _import_pdf2image() -> Any:
    try:
        import pdf2image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError.for_extra("pdf2image", "pdf", "Rendering PDF pages") from exc
    return pdf2image


def _poppler_missing(exc: BaseException | None = None) -> MissingDependencyError:
    detail = f" ({exc})" if exc is not None else ""
    return MissingDependencyError(
        f"Rendering PDF pages needs poppler's command-line tools (pdfinfo, pdftoppm), which were "
        f"not found{detail}. {_POPPLER_HINT}."
    )


def page_image_path(
    image_dir: PathLike,
    source: PathLike,
    page: int,
    *,
    dpi: int = DEFAULT_DPI,
    image_format: ImageFormat = "png",
) -> str:
    """The path under ``image_dir`` where a page's rendered image is kept.

    The name is ``<stem>-<digest>-p<page>.<ext>``, where the digest hashes the source's absolute
    path, size and modification time with the page number, resolution and format: the same
    unchanged file always maps to the same name (re-indexing reuses it), and a changed file, a
    different page or a different resolution never collides with it.

    Args:
        image_dir: the managed folder.
        source: the source PDF or image (it must exist).
        page: the 1-based page number.
        dpi: the rendering resolution (ignored for image sources).
        image_format: ``"png"`` or ``"jpeg"``.

    Raises:
        FileIngestError: ``source`` cannot be read (``os.stat`` fails).
    """
    path = os.path.abspath(os.fspath(source))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise FileIngestError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    resolution = dpi if classify_path(path) == "pdf" else 0
    key = f"{path}\n{st.st_size}\n{st.st_mtime_ns}\n{page}\n{resolution}\n{image_format}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:40].strip("._") or "page"
    name = f"{stem}-{digest}-p{page:04d}.{_EXTENSIONS[image_format]}"
    return os.path.join(os.path.abspath(os.fspath(image_dir)), name)


def _to_rgb(image: Image) -> Image:
    """Convert to RGB, compositing any transparency onto white (not black)."""
    from PIL import Image as PILImage

    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = PILImage.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _save_atomic(image: Image, target: str, image_format: ImageFormat, source: str) -> None:
    """Write ``image`` to ``target`` through a temporary file, so a crash never leaves a
    half-written image under the final name."""
    tmp = f"{target}.{uuid.uuid4().hex}.tmp"
    try:
        if image_format == "png":
            image.save(tmp, format="PNG", compress_level=3)
        else:
            image.save(tmp, format="JPEG", quality=90)
        os.replace(tmp, target)
    except OSError as exc:
        raise FileIngestError(
            source, f"cannot save the page image to {target!r}: {exc.strerror or exc}"
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_cached(image_path: str) -> Image | None:
    """Open a previously saved page image; ``None`` when it is missing or unreadable."""
    if not os.path.isfile(image_path):
        return None
    from PIL import Image as PILImage

    try:
        with PILImage.open(image_path) as im:
            im.load()
            return _to_rgb(im)
    except Exception as exc:  # a damaged cache file is re-rendered, never fatal
        logger.warning("re-rendering page: cached image %s is unreadable (%s)", image_path, exc)
        return None


def _describe_poppler_error(message: str, password: str | None) -> str:
    """Turn poppler's stderr into a reason a user can act on."""
    text = message.replace("Unable to get page count.", "").strip()
    lowered = text.lower()
    if "incorrect password" in lowered:
        if password is None:
            return (
                "the PDF is encrypted and needs a password; pass password=... or decrypt it "
                "first (e.g. `qpdf --decrypt --password=PW in.pdf out.pdf`)"
            )
        return "the PDF is encrypted and the password given does not open it"
    if "invalid page count 0" in lowered or "document stream is empty" in lowered:
        return "the PDF has no pages"
    if "may not be a pdf file" in lowered:
        return "not a PDF file (poppler cannot parse it)"
    if "couldn't read xref table" in lowered or "couldn't find trailer" in lowered:
        return f"the PDF is corrupt or truncated (poppler: {_first_line(text)})"
    if "permission denied" in lowered:
        return "permission denied"
    return f"poppler cannot read the PDF: {_first_line(text) or 'unknown error'}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[0]


class PageRenderer:
    """Renders PDF pages and opens images; the engine behind :func:`iter_pages`.

    Args:
        dpi: the resolution PDF pages are rendered at.
        image_dir: the managed folder where page images are saved (created if needed), or
            ``None`` to keep pages in memory only.
        image_format: ``"png"`` (lossless, default) or ``"jpeg"`` (smaller).
        page_batch_size: how many PDF pages one poppler call renders; memory holds at most
            this many pages of a PDF at a time.
        password: the user password for encrypted PDFs.
        poppler_path: the folder of poppler's binaries when they are not on ``PATH``.
        timeout: seconds one poppler call may run before the file counts as failed.

    Raises:
        InvalidInputError: an argument is out of range, or ``image_dir`` cannot be created.
    """

    def __init__(
        self,
        *,
        dpi: int = DEFAULT_DPI,
        image_dir: PathLike | None = None,
        image_format: ImageFormat = "png",
        page_batch_size: int = DEFAULT_PAGE_BATCH_SIZE,
        password: str | None = None,
        poppler_path: PathLike | None = None,
        timeout: float | None = None,
    ) -> None:
        if isinstance(dpi, bool) or not isinstance(dpi, int) or not 1 <= dpi <= 1200:
            raise InvalidInputError(f"dpi must be an integer between 1 and 1200, got {dpi!r}")
        if image_format not in _EXTENSIONS:
            raise InvalidInputError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        if (
            isinstance(page_batch_size, bool)
            or not isinstance(page_batch_size, int)
            or page_batch_size < 1
        ):
            raise InvalidInputError(
                f"page_batch_size must be a positive integer, got {page_batch_size!r}"
            )
        if timeout is not None and not timeout > 0:
            raise InvalidInputError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        self.dpi = dpi
        self.image_format: ImageFormat = image_format
        self.page_batch_size = page_batch_size
        self.password = password
        self.poppler_path = os.fspath(poppler_path) if poppler_path is not None else None
        self.timeout = timeout
        self.image_dir: str | None = None
        if image_dir is not None:
            folder = os.path.abspath(os.fspath(image_dir))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise InvalidInputError(
                    f"image_dir {folder!r} cannot be created: {exc.strerror or exc}; "
                    "pass a writable folder"
                ) from exc
            self.image_dir = folder

    # -- helpers -------------------------------------------------------------------------------

    def _target(self, path: str, page: int) -> str | None:
        if self.image_dir is None:
            return None
        return page_image_path(
            self.image_dir, path, page, dpi=self.dpi, image_format=self.image_format
        )

    def _finish(self, path: str, page: int, image: Image, target: str | None) -> PageRecord:
        image = _to_rgb(image)
        if target is not None and not os.path.isfile(target):
            _save_atomic(image, target, self.image_format, path)
        return PageRecord(
            image=image,
            ref=PageRef(
                path=path, page=page, width=image.width, height=image.height, image_path=target
            ),
        )

    @staticmethod
    def _check_file(path: str) -> int:
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise FileIngestError(path, "no such file or directory") from exc
        except OSError as exc:
            raise FileIngestError(path, f"cannot read the file: {exc.strerror or exc}") from exc
        if st.st_size == 0:
            raise FileIngestError(path, "the file is empty (0 bytes)")
        return st.st_size

    # -- PDFs ----------------------------------------------------------------------------------

    def pdf_page_count(self, path: str) -> int:
        """The number of pages of a PDF, from ``pdfinfo``.

        Raises:
            FileIngestError: the file is empty, not a PDF, corrupt, encrypted or has no pages.
            MissingDependencyError: poppler (or pdf2image) is not installed.
        """
        self._check_file(path)
        try:
            with open(path, "rb") as fh:
                head = fh.read(1024)
        except OSError as exc:
            raise FileIngestError(path, f"cannot read the file: {exc.strerror or exc}") from exc
        if b"%PDF-" not in head:
            raise FileIngestError(path, "not a PDF file (no %PDF- header)")
        pdf2image = _import_pdf2image()
        exceptions = pdf2image.exceptions
        try:
            info = pdf2image.pdfinfo_from_path(
                path,
                userpw=self.password,
                poppler_path=self.poppler_path,
                timeout=self.timeout,
            )
        except exceptions.PDFInfoNotInstalledError as exc:
            raise _poppler_missing(exc) from exc
        except exceptions.PDFPopplerTimeoutError as exc:
            raise FileIngestError(path, f"pdfinfo ran longer than {self.timeout} s") from exc
        except exceptions.PDFPageCountError as exc:
            raise FileIngestError(path, _describe_poppler_error(str(exc), self.password)) from exc
        pages = info.get("Pages")
        if not isinstance(pages, int):
            raise FileIngestError(path, "pdfinfo did not report a page count")
        if pages == 0:
            raise FileIngestError(path, "the PDF has no pages")
        return pages

    def render_pdf_pages(
        self, path: str, first: int, last: int, *, size: tuple[int, int] | None = None
    ) -> list[Image]:
        """Render pages ``first``..``last`` (1-based, inclusive) in one poppler call.

        Raises:
            FileIngestError: poppler fails or returns fewer pages than asked.
            MissingDependencyError: poppler (or pdf2image) is not installed.
        """
        pdf2image = _import_pdf2image()
        exceptions = pdf2image.exceptions
        try:
            images: list[Image] = pdf2image.convert_from_path(
                path,
                dpi=self.dpi,
                first_page=first,
                last_page=last,
                userpw=self.password,
                poppler_path=self.poppler_path,
                timeout=self.timeout,
                size=size,
            )
        except (exceptions.PopplerNotInstalledError, FileNotFoundError) as exc:
            raise _poppler_missing(exc) from exc
        except exceptions.PDFPopplerTimeoutError as exc:
            raise FileIngestError(
                path, f"rendering pages {first}-{last} ran longer than {self.timeout} s"
            ) from exc
        except exceptions.PDFPageCountError as exc:
            raise FileIngestError(path, _describe_poppler_error(str(exc), self.password)) from exc
        except OSError as exc:  # e.g. the output cannot be parsed as an image
            raise FileIngestError(path, f"rendering pages {first}-{last} failed: {exc}") from exc
        expected = last - first + 1
        if len(images) != expected:
            raise FileIngestError(
                path,
                f"poppler rendered {len(images)} of the {expected} pages {first}-{last}; "
                "the PDF is probably damaged",
            )
        return images

    def iter_pdf(self, path: str) -> Iterator[PageRecord]:
        """Yield a PDF's pages in order, rendering ``page_batch_size`` pages at a time."""
        n_pages = self.pdf_page_count(path)
        for first in range(1, n_pages + 1, self.page_batch_size):
            last = min(n_pages, first + self.page_batch_size - 1)
            targets = [self._target(path, page) for page in range(first, last + 1)]
            cached = [_load_cached(t) if t is not None else None for t in targets]
            if all(im is not None for im in cached):
                images: list[Image] = [im for im in cached if im is not None]
            else:
                images = self.render_pdf_pages(path, first, last)
            for offset, (image, target) in enumerate(zip(images, targets, strict=True)):
                yield self._finish(path, first + offset, image, target)
            del images, cached

    def iter_pdf_text(self, path: str) -> Iterator[tuple[int, str]]:
        """Yield ``(page number, text)`` for each page of a PDF that has extractable text.

        Uses poppler's ``pdftotext`` (one call per page batch). Pages without text (scans) are
        left out; a PDF with no text at all is a failure that suggests a ColPali encoder.

        Raises:
            FileIngestError: the PDF is unreadable, or has no extractable text.
        """
        import shutil
        import subprocess

        n_pages = self.pdf_page_count(path)
        exe = "pdftotext"
        if self.poppler_path is not None:
            exe = os.path.join(self.poppler_path, "pdftotext")
        elif shutil.which(exe) is None:
            raise _poppler_missing()
        found = 0
        for first in range(1, n_pages + 1, self.page_batch_size):
            last = min(n_pages, first + self.page_batch_size - 1)
            cmd = [exe, "-f", str(first), "-l", str(last), "-enc", "UTF-8"]
            if self.password is not None:
                cmd += ["-upw", self.password]
            try:
                done = subprocess.run(
                    [*cmd, path, "-"], capture_output=True, timeout=self.timeout, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise FileIngestError(path, f"pdftotext ran past {self.timeout}s") from exc
            if done.returncode != 0:
                message = done.stderr.decode("utf-8", "replace")
                raise FileIngestError(path, _describe_poppler_error(message, self.password))
            # pdftotext ends every page with a form feed.
            pages = done.stdout.decode("utf-8", "replace").split("\f")
            for offset, text in enumerate(pages[: last - first + 1]):
                if text.strip():
                    found += 1
                    yield first + offset, text.replace("\r\n", "\n")
        if found == 0:
            raise FileIngestError(
                path,
                "the PDF has no text layer (a scan?), and a text encoder reads only a PDF's "
                "text layer; index its pages as images with an image encoder (ColPali) into "
                "another collection",
            )

    # -- images --------------------------------------------------------------------------------

    def iter_image(self, path: str) -> Iterator[PageRecord]:
        """Yield an image file as one page (each frame of a multi-page TIFF as a page)."""
        self._check_file(path)
        from PIL import Image as PILImage
        from PIL import ImageOps, UnidentifiedImageError

        try:
            handle = PILImage.open(path)
        except UnidentifiedImageError as exc:
            raise FileIngestError(path, "not a readable image (Pillow cannot identify it)") from exc
        except PILImage.DecompressionBombError as exc:
            raise FileIngestError(path, f"the image is too large to open safely: {exc}") from exc
        except OSError as exc:
            raise FileIngestError(path, f"cannot open the image: {exc}") from exc
        with handle:
            n_frames = getattr(handle, "n_frames", 1) if handle.format == "TIFF" else 1
            for index in range(n_frames):
                page = index + 1
                target = self._target(path, page)
                cached = _load_cached(target) if target is not None else None
                if cached is not None:
                    yield self._finish(path, page, cached, target)
                    continue
                try:
                    if index:
                        handle.seek(index)
                    handle.load()
                    frame = ImageOps.exif_transpose(handle) or handle
                    image = _to_rgb(frame)
                    if image is handle:
                        image = handle.copy()
                except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
                    where = f" (frame {page} of {n_frames})" if n_frames > 1 else ""
                    raise FileIngestError(
                        path, f"the image is damaged or truncated{where}: {exc}"
                    ) from exc
                yield self._finish(path, page, image, target)

    def iter_file(self, path: str) -> Iterator[PageRecord]:
        """Yield the pages of one PDF or image file."""
        kind = classify_path(path)
        if kind == "pdf":
            return self.iter_pdf(path)
        if kind == "image":
            return self.iter_image(path)
        raise FileIngestError(path, f"not a PDF or image file (suffix {Path(path).suffix!r})")


def _count_page(_record: PageRecord, report: IngestReport) -> None:
    report.pages += 1


def iter_pages(
    paths: PathLike | Iterable[PathLike],
    *,
    dpi: int = DEFAULT_DPI,
    image_dir: PathLike | None = None,
    image_format: ImageFormat = "png",
    errors: ErrorMode = "collect",
    recursive: bool = True,
    page_batch_size: int = DEFAULT_PAGE_BATCH_SIZE,
    password: str | None = None,
    poppler_path: PathLike | None = None,
    timeout: float | None = None,
    report: IngestReport | None = None,
) -> IngestIterator[PageRecord]:
    """Stream the pages of PDFs, images and folders of them, one :class:`PageRecord` at a time.

    Files are taken in the order given; a folder contributes its PDFs and images sorted by name
    (subfolders after files, when ``recursive``); other files in folders are skipped and listed
    in ``report.skipped``. A PDF's pages are rendered ``page_batch_size`` at a time, so memory
    holds only a few pages however long the PDF is.

    Args:
        paths: a file or folder, or a list of them.
        dpi: the resolution PDF pages are rendered at.
        image_dir: a managed folder to save every page image in (``PageRef.image_path``);
            names are deterministic, so re-indexing an unchanged file reuses its images.
            ``None`` keeps pages in memory only.
        image_format: ``"png"`` or ``"jpeg"`` for saved pages.
        errors: ``"collect"`` records a file that cannot be read in ``report.failures`` and goes
            on with the next; ``"raise"`` raises its :class:`~latewise.errors.FileIngestError`.
        recursive: whether folders are searched recursively.
        page_batch_size: PDF pages rendered per poppler call.
        password: the user password for encrypted PDFs.
        poppler_path: the folder of poppler's binaries, when they are not on ``PATH``.
        timeout: seconds one poppler call may run.
        report: an existing report to add to (to share one across several runs).

    Returns:
        An iterator of :class:`PageRecord` whose ``report`` is complete once it is exhausted.

    Raises:
        FileIngestError: in ``"raise"`` mode, for the first file that is missing, of an
            unsupported type, empty, corrupt, encrypted (without the right password) or
            unreadable.
        MissingDependencyError: poppler or pdf2image is missing (in either mode).
        InvalidInputError: an argument is out of range.

    Example:
        ::

            pages = iter_pages(["report.pdf", "scans/"], image_dir=".latewise/pages")
            for record in pages:
                print(record.ref.path, record.ref.page, record.image.size)
            print(pages.report.summary())
    """
    mode = validate_error_mode(errors)
    renderer = PageRenderer(
        dpi=dpi,
        image_dir=image_dir,
        image_format=image_format,
        page_batch_size=page_batch_size,
        password=password,
        poppler_path=poppler_path,
        timeout=timeout,
    )
    run_report = report if report is not None else IngestReport()
    sources = iter_sources(
        paths,
        ("pdf", "image"),
        recursive=recursive,
        report=run_report,
        exclude=[renderer.image_dir] if renderer.image_dir else (),
    )
    records = run_sources(
        sources,
        {"pdf": renderer.iter_pdf, "image": renderer.iter_image},
        errors=mode,
        report=run_report,
        count=_count_page,
    )
    return IngestIterator(records, run_report)


def render_page(
    path: PathLike,
    page: int = 1,
    *,
    dpi: int = DEFAULT_DPI,
    size: tuple[int, int] | None = None,
    password: str | None = None,
    poppler_path: PathLike | None = None,
    timeout: float | None = None,
) -> Image:
    """Render one page of a PDF (or open one page of an image) as an RGB image.

    Args:
        path: the PDF or image file.
        page: the 1-based page number.
        dpi: the resolution for PDF pages (ignored when ``size`` is given).
        size: ``(width, height)`` in pixels to render a PDF page at (or resize an image to).
        password: the user password for an encrypted PDF.
        poppler_path: the folder of poppler's binaries, when they are not on ``PATH``.
        timeout: seconds the poppler call may run.

    Raises:
        FileIngestError: the file cannot be read, or has no such page.
        MissingDependencyError: poppler or pdf2image is missing.
    """
    source = os.path.abspath(os.fspath(path))
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidInputError(f"page must be a 1-based page number, got {page!r}")
    renderer = PageRenderer(dpi=dpi, password=password, poppler_path=poppler_path, timeout=timeout)
    kind = classify_path(source)
    if kind == "pdf":
        n_pages = renderer.pdf_page_count(source)
        if page > n_pages:
            raise FileIngestError(source, f"has {n_pages} page(s); page {page} does not exist")
        image = renderer.render_pdf_pages(source, page, page, size=size)[0]
        return _to_rgb(image)
    if kind == "image":
        for record in renderer.iter_image(source):
            if record.ref.page == page:
                image = record.image
                if size is not None and image.size != tuple(size):
                    image = image.resize(size)
                return image
        raise FileIngestError(source, f"the image has no page (frame) {page}")
    raise FileIngestError(source, f"not a PDF or image file (suffix {Path(source).suffix!r})")


def load_page_image(
    ref: PageRef,
    *,
    dpi: int = DEFAULT_DPI,
    save: bool = True,
    password: str | None = None,
    poppler_path: PathLike | None = None,
) -> Image:
    """The image of a page: the saved file when it exists, else re-rendered from the source.

    When re-rendering and the reference knows the page's size, the page is rendered at exactly
    that size (so patch positions stay valid); otherwise at ``dpi``. With ``save``, a missing
    saved image is written back to ``ref.image_path``.

    Args:
        ref: the page reference (from a :class:`PageRecord` or a search hit).
        dpi: the resolution used when the size is unknown.
        save: write a re-rendered page back to ``ref.image_path``.
        password: the user password for an encrypted PDF.
        poppler_path: the folder of poppler's binaries, when they are not on ``PATH``.

    Raises:
        FileIngestError: the saved image is missing and the source cannot be rendered.
    """
    if ref.image_path is not None:
        cached = _load_cached(ref.image_path)
        if cached is not None:
            return cached
    size = (ref.width, ref.height) if ref.width and ref.height else None
    image = render_page(
        ref.path, ref.page, dpi=dpi, size=size, password=password, poppler_path=poppler_path
    )
    if size is not None and image.size != size:
        logger.warning(
            "page %d of %s re-rendered at %s, not the %s it was indexed at; resizing "
            "(the source may have changed since indexing)",
            ref.page,
            ref.path,
            image.size,
            size,
        )
        image = image.resize(size)
    if save and ref.image_path is not None:
        os.makedirs(os.path.dirname(ref.image_path) or ".", exist_ok=True)
        image_format: ImageFormat = (
            "jpeg" if ref.image_path.lower().endswith((".jpg", ".jpeg")) else "png"
        )
        _save_atomic(image, ref.image_path, image_format, ref.path)
    return image
