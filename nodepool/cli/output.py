"""How the CLI prints: tables for people, JSON for scripts, ages as DD:HH:MM:SS."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Sequence

import prettytable


def format_age(seconds: float) -> str:
    """Ages the Nodepool way: DD:HH:MM:SS, zero-padded."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def age_of(state_time: float | None, now: float | None = None) -> float:
    if not state_time:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - state_time)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    table = prettytable.PrettyTable(list(headers))
    table.align = "l"
    for row in rows:
        table.add_row([cell(v) for v in row])
    print(table, file=out or sys.stdout)


def print_json(data: Any, out=None) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=out or sys.stdout)
