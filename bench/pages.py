"""Benchmark: PDF pages to page vectors - rendering, encoding, ``add_files``, and flat memory.

Everything is built offline in a temporary folder: a tiny randomly initialised ColPali checkpoint
(``tests/fixtures/colpali_models.build_colpali``: 1-layer SigLIP at 32 px + 1-layer Gemma,
~0.26 M parameters) and two PDFs of US-letter pages (612 x 792 pt; 850 x 1100 px at 100 dpi) drawn
with Pillow (``tests/fixtures/documents.draw_page``: title, text lines, a table, shapes), written
``--chunk`` pages at a time and joined with poppler's ``pdfunite``, so generating 500 pages never
holds them all.

It measures, on the same machine in the same run:

- rendering alone: ``latewise.ingest.iter_pages`` streamed over the large PDF, every page saved
  as PNG in a managed folder (pages/s, peak RSS);
- the naive reference: ``pdf2image.convert_from_path`` of the whole PDF at once (every page held
  in memory, nothing saved), for the small and the large PDF (pages/s, peak RSS);
- encoding alone: ``ColPaliEncoder.encode_documents`` over ``--pages-small`` rendered pages, from
  the saved PNGs (as ``add_files`` does) and from images already decoded (pages/s, interleaved
  rounds, median);
- the whole pipeline: ``LateInteractionIndex.add_files`` (render + save + encode + store in an
  embedded Chroma), with its time split by ``index.written`` (encode / prepare / store; the rest
  is rendering, saving and bookkeeping), for ``--pages-small`` and ``--pages-large`` pages;
- memory: every measured run happens in a FRESH subprocess, so each peak belongs to one run.
  The child reports its baseline RSS (after imports, model load, index creation and one warm-up
  page encode), its peak RSS over its whole life (``VmHWM``; see :func:`peak_rss` for why not
  ``ru_maxrss``), the peak during the measured work alone (high-water mark reset at its start)
  and, as a cross-check, RSS sampled every 10 ms. poppler runs in its own short-lived processes
  (a few pages per call when streaming) and is not counted. The target is flat memory:
  peak(large) / peak(small) <= 1.3; the ratio of the increments over the baseline is printed too,
  since a large fixed baseline (torch, transformers, chromadb) flatters the first ratio.

The model is TINY: its encode speed says nothing about a real ColPali (a 3B PaliGemma at 448 px
gives ~1,030 vectors a page and is orders of magnitude slower on a CPU). What the encode numbers
measure here is latewise's and colpali-engine's per-page overhead (image decode, resize,
batching), which a real model adds its forward pass to.

The machine is shared (2 cores, other jobs running): timings are noisy, memory numbers much less
so. Takes ~3-5 minutes with the defaults.

    python bench/pages.py                                 # 50 vs 500 pages at 100 dpi
    python bench/pages.py --pages-small 20 --pages-large 200 --batch-size 32
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "src"))

from bench._common import Timing, cpu_model, load_average, measure, summary_line  # noqa: E402

logger = logging.getLogger("bench.pages")

_RESULT = "RESULT "
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
_MIB = 2**20


# -- memory -----------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), in bytes; ``None`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    rss = _status_kib("VmRSS")
    return rss if rss is not None else peak_rss()


def peak_rss() -> int:
    """Peak RSS of this process image, in bytes: ``VmHWM`` on Linux.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: at ``exec`` Linux folds the spawning process's
    high-water mark into it (``sig->maxrss``), so a child started by a parent that holds torch
    and a model reports the parent's peak as its own (measured here: a bare child of this
    benchmark showed 837 MiB). ``VmHWM`` belongs to the new process image only.
    """
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0, ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds on a thread; ``peak`` is the
    largest sample (a cross-check of the reset high-water mark; it can miss short spikes)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())


@contextmanager
def measured_work() -> Iterator[dict[str, Any]]:
    """Record the baseline RSS, then the wall time and the peaks of the block.

    ``peak_rss``: the process's peak over its whole life (imports and model load included);
    ``work_peak``: the peak during the block alone (high-water mark reset at the start; the
    sampled peak where it cannot be reset); ``sampled_peak``: RSS sampled every 10 ms.
    """
    gc.collect()
    out: dict[str, Any] = {"baseline_rss": current_rss(), "peak_before": peak_rss()}
    lifetime_before = out["peak_before"]
    resettable = reset_peak_rss()
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        yield out
        out["seconds"] = time.perf_counter() - t0
    out["sampled_peak"] = sampler.peak
    out["work_peak"] = peak_rss() if resettable else sampler.peak
    out["peak_rss"] = max(lifetime_before, out["work_peak"])
    gc.collect()
    out["end_rss"] = current_rss()


# -- test documents ---------------------------------------------------------------------------


def write_pdf(path: Path, n_pages: int, *, chunk: int, size: tuple[int, int]) -> Path:
    """Write an ``n_pages`` PDF of ``size``-point pages, ``chunk`` pages at a time.

    Each chunk is drawn with :func:`tests.fixtures.documents.draw_page` and saved as its own PDF
    (Pillow needs every page of one save in memory), then poppler's ``pdfunite`` joins them.
    Pillow's PDF writer leaves reference cycles that keep a chunk's images alive until the
    cyclic garbage collector runs, hence the explicit ``gc.collect()``.
    """
    from tests.fixtures.documents import draw_page

    parts: list[Path] = []
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        for start in range(0, n_pages, chunk):
            pages = [draw_page(*size, i + 1) for i in range(start, min(n_pages, start + chunk))]
            part = Path(tmp) / f"part{start:06d}.pdf"
            pages[0].save(part, format="PDF", save_all=True, append_images=pages[1:])
            parts.append(part)
            del pages
            gc.collect()
        if len(parts) == 1:
            shutil.move(str(parts[0]), path)
        else:
            done = subprocess.run(
                ["pdfunite", *map(str, parts), str(path)], capture_output=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"pdfunite failed: {done.stderr.decode(errors='replace')}")
    return path


# -- children (one measured run each, in a fresh interpreter) ---------------------------------


def _load_encoder(model: str, batch_size: int) -> Any:
    from latewise import ColPaliEncoder

    return ColPaliEncoder(model, batch_size=batch_size, device="cpu")


def _warm_up(encoder: Any, dpi: int) -> None:
    """One page-sized encode, so the baseline includes the forward pass's one-off allocations."""
    from PIL import Image

    side = (round(8.5 * dpi), round(11 * dpi))
    encoder.encode_documents([Image.new("RGB", side, "white")])


def child_index(args: argparse.Namespace) -> dict[str, Any]:
    """``add_files`` of one PDF into a fresh embedded index."""
    import torch

    from latewise import LateInteractionIndex

    torch.set_num_threads(args.threads)
    encoder = _load_encoder(args.model, args.encoder_batch_size)
    index = LateInteractionIndex(encoder, path=args.work, collection="pages")
    _warm_up(encoder, args.dpi)
    with measured_work() as out:
        report = index.add_files(
            args.pdf, dpi=args.dpi, batch_size=args.batch_size, show_progress_bar=False
        )
    if report.failures or report.pages != args.pages or len(index) != args.pages:
        raise SystemExit(f"indexing went wrong: {report.summary()}; {len(index)} documents stored")
    w = index.written
    out.update(
        pages=report.pages,
        documents=len(index),
        vectors=w.vectors,
        rows=w.rows,
        encode_seconds=w.encode_seconds,
        prepare_seconds=w.prepare_seconds,
        store_seconds=w.store_seconds,
        batch_size=args.batch_size or index.batch_size,
    )
    return out


def child_render(args: argparse.Namespace) -> dict[str, Any]:
    """``iter_pages`` over one PDF, every page saved as PNG."""
    from latewise.ingest import iter_pages

    sizes: set[tuple[int, int]] = set()
    with measured_work() as out:
        pages = iter_pages(args.pdf, dpi=args.dpi, image_dir=args.work, errors="raise")
        n = 0
        for record in pages:
            sizes.add(record.image.size)
            n += 1
    out.update(pages=n, sizes=sorted(sizes))
    return out


def child_naive(args: argparse.Namespace) -> dict[str, Any]:
    """``pdf2image.convert_from_path`` of the whole PDF: every page in memory at once."""
    import pdf2image

    with measured_work() as out:
        images = pdf2image.convert_from_path(args.pdf, dpi=args.dpi)
        n = len(images)
        held = sum(im.width * im.height * len(im.getbands()) for im in images)
        del images
    out.update(pages=n, held_bytes=held)
    return out


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "index": child_index,
    "render": child_render,
    "naive": child_naive,
}


def run_child(
    kind: str, pdf: Path, pages: int, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one measured job in a fresh interpreter and return what it reports."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--pdf",
        str(pdf),
        "--pages",
        str(pages),
        "--work",
        str(work),
        "--model",
        str(args.model),
        "--dpi",
        str(args.dpi),
        "--threads",
        str(args.threads),
        "--encoder-batch-size",
        str(args.encoder_batch_size),
    ]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"child {kind} ({pages} pages) failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(lines[-1][len(_RESULT) :])
    result["process_seconds"] = time.perf_counter() - t0
    return result


# -- reporting --------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / _MIB:7.0f} MiB"


def rate(pages: int, seconds: float) -> float:
    return pages / seconds if seconds > 0 else float("inf")


def memory_line(name: str, r: dict[str, Any]) -> str:
    inc = r["work_peak"] - r["baseline_rss"]
    return (
        f"  {name:<34} baseline {mib(r['baseline_rss'])}, peak {mib(r['peak_rss'])}, "
        f"during work {mib(r['work_peak'])} (+{inc / _MIB:4.0f} MiB; sampled "
        f"{r['sampled_peak'] / _MIB:.0f}; before work {r['peak_before'] / _MIB:.0f}; "
        f"after {r['end_rss'] / _MIB:.0f} MiB)"
    )


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pages-small", type=int, default=50)
    parser.add_argument("--pages-large", type=int, default=500)
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="add_files batch_size: pages encoded and written per batch (default: the index's)",
    )
    parser.add_argument(
        "--encoder-batch-size", type=int, default=4, help="ColPaliEncoder batch_size"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of encoding alone")
    parser.add_argument("--chunk", type=int, default=25, help="pages per Pillow save (PDF maker)")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    # Internal: one measured run in a child process.
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--pdf", help=argparse.SUPPRESS)
    parser.add_argument("--pages", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    if args.child:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        result = CHILDREN[args.child](args)
        print(_RESULT + json.dumps(result), flush=True)
        return 0
    if not 0 < args.pages_small < args.pages_large:
        parser.error("need 0 < --pages-small < --pages-large")
    if shutil.which("pdfunite") is None or shutil.which("pdftoppm") is None:
        raise SystemExit("bench/pages.py needs poppler-utils (pdfunite, pdftoppm)")
    os.environ["HF_HUB_OFFLINE"] = "1"

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="latewise-bench-pages-") as tmp:
        return run(args, Path(tmp))


def time_encoding(args: argparse.Namespace, pngs: list[Path]) -> dict[str, Timing]:
    """``encode_documents`` over saved PNGs and over the same pages already decoded."""
    from PIL import Image

    from latewise import ColPaliEncoder

    encoder = ColPaliEncoder(args.model, batch_size=args.encoder_batch_size, device="cpu")
    decoded = []
    for p in pngs:
        with Image.open(p) as im:
            decoded.append(im.convert("RGB"))
    shape = tuple(encoder.encode_documents(decoded[:1])[0].shape)
    timings = measure(
        {
            "from saved PNGs": lambda: encoder.encode_documents(pngs),
            "from decoded images": lambda: encoder.encode_documents(decoded),
        },
        repeats=args.repeats,
        warmup=1,
    )
    print(
        f"\nencoding alone (tiny ColPali, {len(pngs)} pages, encoder batch_size "
        f"{args.encoder_batch_size}, {shape[0]} vectors x {shape[1]} a page; median of "
        f"{args.repeats} interleaved rounds after a warm-up):"
    )
    for name, t in timings.items():
        print(
            f"  {name:<22} {rate(len(pngs), t.median):7.1f} pages/s (best "
            f"{rate(len(pngs), t.best):.1f}, spread {t.spread():.0%})"
        )
    return timings


def run(args: argparse.Namespace, root: Path) -> int:
    """Build the model and PDFs under ``root``, run every measurement, print the report."""
    import torch

    from tests.fixtures.colpali_models import build_colpali

    torch.set_num_threads(args.threads)
    print(
        f"latewise pages benchmark - torch {torch.__version__}, {cpu_model()}, "
        f"{args.threads} threads, load average at start {load_average()}"
    )
    print(
        "NOTE: the CPU is shared (2 cores, other jobs running): timings are noisy; memory is "
        "measured per run in fresh processes and is much steadier.\n"
        "NOTE: the ColPali model is a TINY random one (~0.26 M parameters, 32 px input): its "
        "encode speed is NOT a real ColPali's; it shows the per-page overhead around the model."
    )
    small_n, large_n = args.pages_small, args.pages_large
    t0 = time.perf_counter()
    args.model = build_colpali(root / "tiny-colpali")
    letter = (612, 792)
    small = write_pdf(root / f"pages-{small_n}.pdf", small_n, chunk=args.chunk, size=letter)
    large = write_pdf(root / f"pages-{large_n}.pdf", large_n, chunk=args.chunk, size=letter)
    px = (round(letter[0] / 72 * args.dpi), round(letter[1] / 72 * args.dpi))
    print(
        f"setup {time.perf_counter() - t0:.1f} s: tiny ColPali checkpoint; PDFs of {small_n} and "
        f"{large_n} letter pages ({small.stat().st_size / _MIB:.1f} / "
        f"{large.stat().st_size / _MIB:.1f} MiB), rendered at {args.dpi} dpi = {px[0]}x{px[1]} "
        f"px ({px[0] * px[1] * 3 / _MIB:.1f} MiB a page as RGB, {px[0] * px[1] * 4 / _MIB:.1f} "
        "MiB in Pillow, which keeps RGB as 4 bytes a pixel)"
    )

    # -- rendering alone ------------------------------------------------------------------------
    print("\nrendering (each run in a fresh process):")
    render = run_child("render", large, large_n, root / "render-pages", args)
    naive_small = run_child("naive", small, small_n, root / "unused", args)
    naive_large = run_child("naive", large, large_n, root / "unused", args)
    r_render = rate(render["pages"], render["seconds"])
    r_naive = rate(naive_large["pages"], naive_large["seconds"])
    print(
        f"  iter_pages streamed, PNG saved     {large_n} pages in {render['seconds']:6.1f} s = "
        f"{r_render:6.1f} pages/s (page sizes {render['sizes']})"
    )
    print(
        f"  pdf2image.convert_from_path whole  {large_n} pages in {naive_large['seconds']:6.1f} s ="
        f" {r_naive:6.1f} pages/s (nothing saved; holds "
        f"{naive_large['held_bytes'] / _MIB:.0f} MiB of RGB pixels)"
    )
    print(memory_line(f"iter_pages, {large_n} pages", render))
    print(memory_line(f"convert_from_path, {small_n} pages", naive_small))
    print(memory_line(f"convert_from_path, {large_n} pages", naive_large))

    # -- encoding alone -------------------------------------------------------------------------
    pngs = sorted((root / "render-pages").glob("*.png"))[:small_n]
    timings = time_encoding(args, pngs)
    r_encode = rate(len(pngs), timings["from saved PNGs"].median)
    gc.collect()

    # -- the pipeline, and memory ---------------------------------------------------------------
    runs = {
        n: run_child("index", pdf, n, root / f"index-{n}", args)
        for n, pdf in ((small_n, small), (large_n, large))
    }
    print(
        f"\nindex.add_files (render + save + encode + store; fresh process and fresh embedded "
        f"Chroma each; batch_size {runs[large_n]['batch_size']}, encoder batch_size "
        f"{args.encoder_batch_size}):"
    )
    for n, r in runs.items():
        other = r["seconds"] - r["encode_seconds"] - r["prepare_seconds"] - r["store_seconds"]
        print(
            f"  {n:4d} pages: {r['seconds']:6.1f} s = {rate(n, r['seconds']):5.1f} pages/s; "
            f"encode {r['encode_seconds']:5.1f} s ({rate(n, r['encode_seconds']):.0f} p/s), "
            f"prepare {r['prepare_seconds']:4.1f} s, store {r['store_seconds']:4.1f} s "
            f"({rate(n, r['store_seconds']):.0f} p/s), rendering+saving+rest {other:5.1f} s "
            f"({rate(n, other):.1f} p/s); {r['vectors']} vectors, {r['rows']} first-stage rows"
        )
    print("memory (baseline = after imports, model load, index creation, one warm-up encode):")
    for n, r in runs.items():
        print(memory_line(f"add_files, {n} pages", r))

    s, big = runs[small_n], runs[large_n]
    peak_ratio = ratio(big["peak_rss"], s["peak_rss"])
    inc_ratio = ratio(
        big["work_peak"] - big["baseline_rss"], max(s["work_peak"] - s["baseline_rss"], 1)
    )
    naive_ratio = ratio(naive_large["peak_rss"], naive_small["peak_rss"])
    verdict = "PASS" if peak_ratio <= 1.3 else "FAIL"
    print(
        f"\n{large_n} vs {small_n} pages: add_files peak RSS ratio {peak_ratio:.2f} "
        f"(target <= 1.3: {verdict}), ratio of the increments over the baseline {inc_ratio:.2f}; "
        f"naive convert_from_path peak ratio {naive_ratio:.2f}; rendering {large_n} pages adds "
        f"{(render['work_peak'] - render['baseline_rss']) / _MIB:.0f} MiB streamed vs "
        f"{(naive_large['work_peak'] - naive_large['baseline_rss']) / _MIB:.0f} MiB all at once"
    )
    print(f"load average at end {load_average()}; total {time.perf_counter() - t0:.0f} s")
    print(
        summary_line(
            "pages",
            {
                "render (iter_pages+PNG)": f"{r_render:.1f} p/s",
                "naive pdf2image": f"{r_naive:.1f} p/s",
                "encode tiny ColPali (PNG)": f"{r_encode:.1f} p/s",
                "add_files": f"{rate(large_n, big['seconds']):.1f} p/s",
                f"add_files peak RSS {large_n}/{small_n}": f"{peak_ratio:.2f}x ({verdict} <= 1.3)",
                "increment ratio": f"{inc_ratio:.2f}x",
                "naive pdf2image peak ratio": f"{naive_ratio:.2f}x",
            },
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
