"""One gateway's counts across its worker processes (`serve --workers N`), through files in a directory.

Each worker writes its snapshot (a JSON object: its `Counters.state()`, its totals and gauges) to a
file of its own in a directory the parent made before forking, every `PUBLISH_SECONDS` and at exit;
the worker answering /metrics or /health reads the others' latest files and adds them to its own
live counts (`combine`). A dead worker's file stays, so totals never go down when a worker is
restarted (its successor starts at 0 under a new file); its gauges stop counting once the file is
older than `STALE_SECONDS`, as a live worker rewrites its file every second.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gearshift.watch.prometheus import Counters

PUBLISH_SECONDS = 1.0
STALE_SECONDS = 5.0


class Peers:
    """This process's snapshot file in the shared directory, and the other workers' files."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        # pid and a random part: a restarted worker that gets a dead one's pid must not overwrite its totals
        self.path = self.directory / f"worker-{os.getpid()}-{secrets.token_hex(4)}.json"
        self._lock = threading.Lock()  # the periodic write (a thread) and the last one at exit share a file

    def publish(self, snapshot: Mapping[str, Any]) -> None:
        """Replace this process's file at once (write aside, rename): a reader never sees half of it."""
        text = json.dumps({**snapshot, "time": time.time(), "pid": os.getpid()})
        tmp = self.path.with_suffix(".tmp")
        with self._lock:
            tmp.write_text(text)
            os.replace(tmp, self.path)

    def others(self) -> list[dict[str, Any]]:
        """The other processes' latest snapshots (a file being replaced right now is skipped)."""
        out = []
        for p in sorted(self.directory.glob("worker-*.json")):
            if p == self.path:
                continue
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue  # gone or replaced between the listing and the read
        return out


@dataclass
class Combined:
    """The counts of every worker: counters, {name: total} summed over all, {name: gauge} over live ones."""

    counters: Counters
    totals: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    circuits: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1  # processes alive (this one and those whose file is fresh)


def combine(own: Mapping[str, Any], others: Iterable[Mapping[str, Any]], now: float | None = None) -> Combined:
    """Add this process's snapshot (`own`) and the others': totals over all, gauges over the live ones.

    A snapshot: {"pid", "counters": Counters.state(), "totals": {name: n}, "gauges": {name: x},
    "circuits": {model: {"state", "trips", "consecutive_failures"}}, "time": unix seconds (others')}."""
    now = time.time() if now is None else now
    # One order whichever worker answers: float sums (cost, seconds) then come out the same, and a
    # counter never reads a hair lower on the next scrape (Prometheus would take that for a reset).
    every = sorted([own, *others], key=lambda s: int(s.get("pid", 0)))
    live = [s for s in every if s is own or now - float(s.get("time", 0)) <= STALE_SECONDS]
    totals: dict[str, float] = {}
    for s in every:
        for name, v in s.get("totals", {}).items():
            totals[name] = totals.get(name, 0) + v
    gauges: dict[str, float] = {}
    for s in live:
        for name, v in s.get("gauges", {}).items():
            gauges[name] = gauges.get(name, 0) + v
    circuits: dict[str, dict[str, Any]] = {}
    for s in every:
        fresh = any(s is x for x in live)
        for model, c in s.get("circuits", {}).items():
            mine = circuits.setdefault(model, {"state": "closed", "trips": 0, "consecutive_failures": 0})
            mine["trips"] += c.get("trips", 0)  # a counter: every worker's, dead ones included
            if fresh:  # what holds now: open in any live worker; the longest run of failures
                if c.get("state") == "open":
                    mine["state"] = "open"
                mine["consecutive_failures"] = max(mine["consecutive_failures"], c.get("consecutive_failures", 0))
    counters = Counters.merged([s["counters"] for s in every if "counters" in s],
                               [s["counters"] for s in live if "counters" in s])
    return Combined(counters, totals, gauges, circuits, workers=len(live))
