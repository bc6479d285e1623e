"""How the CLI prints: tables for people, JSON for scripts, ages as DD:HH:MM:SS."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import prettytable

from nodepool.listings import age_of, cell, format_age  # noqa: F401 (the CLI's names)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    table = prettytable.PrettyTable(list(headers))
    table.align = "l"
    for row in rows:
        table.add_row([cell(v) for v in row])
    print(table, file=out or sys.stdout)


def print_json(data: Any, out=None) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=out or sys.stdout)
