"""Violations with their evidence, the counters of a run, the one summary line and report.json."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Violation:
    """One broken invariant: `kind` names it (e.g. node-handed-twice), `evidence` shows it."""

    kind: str
    what: str
    evidence: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0  # seconds since the soak started

    def line(self) -> str:
        evidence = json.dumps(self.evidence, sort_keys=True, default=str)
        if len(evidence) > 1500:
            evidence = evidence[:1500] + "...(more in report.json)"
        return f"VIOLATION {self.kind} at {self.at:.1f}s: {self.what} evidence={evidence}"


class Ledger:
    """What happened, written by every thread: counters, chaos events, violations."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.violations: list[Violation] = []
        self.on_event: Callable[[dict[str, Any]], None] | None = None  # progress while chaos runs

    def now(self) -> float:
        return time.monotonic() - self.started

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def event(self, kind: str, **details: Any) -> None:
        """A chaos event (or a notable outcome), kept in order with its time."""
        entry = {"at": round(self.now(), 2), "kind": kind, **details}
        with self.lock:
            self.events.append(entry)
        if (hook := self.on_event) is not None:
            hook(entry)

    def violation(self, kind: str, what: str, **evidence: Any) -> Violation:
        v = Violation(kind, what, evidence, round(self.now(), 2))
        with self.lock:
            self.violations.append(v)
        return v


def summary_line(ledger: Ledger, duration: float, seed: int, run_dir: Path | None) -> str:
    """The one stdout line: outcome, requests, chaos, violations, time."""
    c = ledger.counts
    status = "PASS" if not ledger.violations else "FAIL"
    parts = [
        f"soak {status}:",
        f"requests={c['requests']} fulfilled={c['fulfilled']} failed={c['failed']} stuck={c['stuck']}",
        f"nodes_handed={c['nodes_handed']}",
        f"kills={c['chaos.kill']} pauses={c['chaos.pause']} joins={c['chaos.join']} "
        f"leader_losses={c['chaos.leader']}",
        f"faults={c['chaos.fault']} create_errors={c['chaos.create_error']}"
        f" quota_cuts={c['chaos.quota']}",
        f"violations={len(ledger.violations)}",
        f"duration={duration:.0f}s seed={seed}",
    ]
    if ledger.violations:
        kinds = Counter(v.kind for v in ledger.violations)
        parts.append("kinds=" + ",".join(f"{k}:{n}" for k, n in sorted(kinds.items())))
    if run_dir is not None:
        parts.append(f"run_dir={run_dir}")
    return " ".join(parts)


def write_report(path: Path, ledger: Ledger, args: dict[str, Any], extra: dict[str, Any]) -> None:
    """report.json in the run directory: options, counters, chaos events, violations, findings."""
    with ledger.lock:
        body = {"args": args, "counts": dict(ledger.counts), "events": list(ledger.events),
                "violations": [asdict(v) for v in ledger.violations], **extra}
    path.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
