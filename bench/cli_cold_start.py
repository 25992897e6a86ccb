"""Cold start of the ``latewise`` command line: each command in a fresh process.

Indexes a handful of small text files with the bundled MiniLM, then runs, round after round
(interleaved, so load from other processes hits all alike), each in a new Python process:

- ``interpreter``: ``python -c pass`` (the floor);
- ``import cli``: ``from latewise.cli import app``;
- ``encoder load`` (the reference): ``load_encoder("minilm")`` and one query encoded, which is
  what a search cannot avoid;
- ``search``, ``info``, ``list``, ``delete`` (a filter matching nothing), ``empty query``.

Prints wall and CPU seconds (CPU of the child processes, steadier than wall on a shared
machine) and each command's ratio to the encoder load: ``search`` near 1.0 means the CLI and
the index add little to loading the model; the commands that need no model stay far below it.

Usage: ``python bench/cli_cold_start.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Timing, load_average, summary_line


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for i in range(6):
            (docs / f"d{i}.txt").write_text(
                f"Document {i} is about cats, dogs and kettles boiling water.", encoding="utf-8"
            )
        db = str(Path(tmp) / "db")
        cli = [py, "-m", "latewise"]
        subprocess.run([*cli, "index", str(docs), "--path", db, "-q"], env=env, check=True)
        commands = {
            "interpreter": [py, "-c", "pass"],
            "import cli": [py, "-c", "from latewise.cli import app"],
            "encoder load": [
                py,
                "-c",
                "from latewise import load_encoder; load_encoder('minilm').encode_queries(['x'])",
            ],
            "search": [*cli, "search", "cats purr", "--path", db, "-k", "2"],
            "info": [*cli, "info", "--path", db],
            "list": [*cli, "list", "--path", db],
            "delete": [*cli, "delete", "--where", '{"file_name": "none"}', "--yes", "--path", db],
            "empty query": [*cli, "search", "", "--path", db],
        }
        timings = {name: Timing(name) for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                c0, t0 = child_cpu(), time.perf_counter()
                subprocess.run(command, env=env, capture_output=True, check=False)
                timings[name].wall.append(time.perf_counter() - t0)
                timings[name].cpu.append(child_cpu() - c0)
    ref = timings["encoder load"]
    print(f"{'command':<14} {'wall s':>8} {'cpu s':>8} {'cpu / encoder load':>20}")
    for name, t in timings.items():
        print(
            f"{name:<14} {t.median:8.2f} {t.cpu_median:8.2f} "
            f"{t.cpu_median / statistics.median(ref.cpu):20.2f}"
        )
    print(f"(medians of {args.rounds} rounds; load average {load_average()})")
    print(
        summary_line(
            "cli cold start (cpu / encoder load)",
            {
                name: f"{timings[name].cpu_median / statistics.median(ref.cpu):.2f}"
                for name in ("search", "info", "delete", "empty query")
            },
        )
    )


if __name__ == "__main__":
    main()
