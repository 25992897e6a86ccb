"""The commands: index, search, info, list, delete, drop, repair, explain.

Each command checks its arguments first (a usage error exits 2 before anything is opened or
loaded), then opens the database. Only ``index``, ``search`` and ``explain`` load a model, and
only once something must be encoded; ``info``, ``list``, ``delete``, ``drop`` and ``repair``
never import torch.

Importing this module registers them on :data:`latewise.cli.app.app`, in the order ``--help``
lists them: :mod:`latewise.cli.index_commands` (index, search),
:mod:`latewise.cli.admin_commands` (info, list, delete, drop, repair) and
:mod:`latewise.cli.explain_command` (explain).
"""

from __future__ import annotations

from latewise.cli.admin_commands import (
    delete_command,
    drop_command,
    info_command,
    list_command,
    repair_command,
)
from latewise.cli.explain_command import explain_command

# isort: off  (the import order is the order `latewise --help` lists the commands in)
from latewise.cli.index_commands import index_command, search_command

# isort: on

__all__ = [
    "delete_command",
    "drop_command",
    "explain_command",
    "index_command",
    "info_command",
    "list_command",
    "repair_command",
    "search_command",
]
