"""Shared helpers for the benchmarks: interleaved timing, machine notes, the summary line.

Timings on a shared machine are noisy: :func:`measure` runs every contender once per round,
round after round (so a burst of load from another process hits all of them alike), and
reports the median and the best of the rounds, in wall-clock time and in process CPU time.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Wall-clock and process-CPU seconds of the timed rounds of one contender."""

    name: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def spread(self) -> float:
        """(max - min) / median of the wall times: how noisy the rounds were."""
        return (max(self.wall) - min(self.wall)) / self.median if self.median else 0.0


def measure(
    contenders: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Times each callable ``repeats`` times, interleaved round-robin, after ``warmup`` calls."""
    for name, fn in contenders.items():
        for _ in range(warmup):
            fn()
        if log:
            log(f"  warmed up {name}")
    timings = {name: Timing(name) for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            t1, c1 = time.perf_counter(), time.process_time()
            timings[name].wall.append(t1 - t0)
            timings[name].cpu.append(c1 - c0)
    return timings


def load_average() -> str:
    """The 1-minute load average (how busy the shared machine was), or '?' where unknown."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def summary_line(prefix: str, items: Mapping[str, str]) -> str:
    """``SUMMARY <prefix>: k1 v1; k2 v2; ...`` on one line, for logs and READMEs."""
    return f"SUMMARY {prefix}: " + "; ".join(f"{k} {v}" for k, v in items.items())
