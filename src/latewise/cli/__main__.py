"""``python -m latewise.cli``: the same command line as the ``latewise`` console script."""

from __future__ import annotations

from latewise.cli import main

if __name__ == "__main__":
    main()
