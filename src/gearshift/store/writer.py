"""Trace writing off the response's critical path: enqueue is O(1), a thread writes in batches.

A store outage (a database restart, a failover, a locked file) loses nothing that fits in memory:
traces are held, up to `max_held`, and written when the store answers again. A trace the store keeps
refusing while it answers (a row it cannot take) is dropped after a few tries, logged by id, so
that it cannot block the others. Traces still held when the process stops go to a spill file, and
the next writer to start on the same spill path writes them (ids make a second write harmless).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Protocol

import orjson

from gearshift.store.base import TraceStore
from gearshift.trace import Call, Trace

log = logging.getLogger("gearshift.store")

REFUSALS = 3  # tries, while the store answers, before a trace is dropped as refused
MAX_BACKOFF = 5.0
LOG_EVERY = 30.0
COUNTS = ("written", "updated", "failed", "dropped", "spilled", "unspilled")  # seconds between "still unreachable" lines during an outage


class Writer(Protocol):
    """What the gateway asks of a trace writer: this module's thread, or store/process.py's child process."""

    store: TraceStore
    spill: Path | None

    def put(self, trace: Trace) -> None: ...
    def pending(self) -> int: ...
    def outage_seconds(self) -> float | None: ...
    def counts(self) -> dict[str, int]: ...
    def close(self, timeout: float = 30.0) -> None: ...


class TraceWriter:
    """Batches traces into the store from a background thread; `close()` drains what it can."""

    def __init__(self, store: TraceStore, batch_size: int = 500, flush_interval: float = 0.2,
                 max_held: int = 100_000, spill: str | Path | None = None) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_held = max_held
        self.written = 0  # traces, each counted once
        self.updated = 0  # writes of a trace written before (its shadow pair added)
        self.failed = 0  # refused by the store, or still unwritten when the writer stopped
        self.dropped = 0  # not kept: `max_held` traces were already waiting for the store
        self._q: queue.SimpleQueue[Trace] = queue.SimpleQueue()
        self._held: list[Trace] = []  # taken from the queue, not yet written (oldest first)
        self._tries: dict[str, int] = {}
        self._backoff = 0.0
        self._retry_at = 0.0
        self._outage_since: float | None = None
        self._last_log = 0.0
        self._stop = threading.Event()
        self._deadline = 0.0
        self.spill = Path(spill) if spill is not None else None
        self.spilled = 0  # traces put in the spill file at shutdown
        self.unspilled = 0  # traces read back from spill files at start
        self._claimed: list[Path] = []  # spill files read at start, removed once their traces are written
        if self.spill is not None:
            self._read_spills(self.spill)
        self._thread = threading.Thread(target=self._run, name="gearshift-trace-writer", daemon=True)
        self._thread.start()

    def put(self, trace: Trace) -> None:
        """Queue a trace; never blocks. Past `max_held` waiting traces, the trace is dropped (counted)."""
        if self._q.qsize() + len(self._held) >= self.max_held:
            self.dropped += 1
            return
        self._q.put(trace)

    def counts(self) -> dict[str, int]:
        """Traces written, updated (a second write: the shadow pair), failed, dropped, spilled and unspilled."""
        return {name: getattr(self, name) for name in COUNTS}

    def pending(self) -> int:
        """Traces queued or held, not yet written."""
        return self._q.qsize() + len(self._held)

    def outage_seconds(self) -> float | None:
        """How long the store has not been taking traces, or None while it does."""
        since = self._outage_since
        return None if since is None else time.monotonic() - since

    @property
    def outage_since(self) -> float | None:
        """The `time.monotonic()` at which the store stopped taking traces, or None while it does."""
        return self._outage_since

    def _run(self) -> None:
        # Poll rather than block on get(): a put() that must wake a waiting thread costs the event
        # loop a thread switch per request; a put() into a queue nobody waits on costs almost nothing.
        while not self._stop.wait(self.flush_interval):
            self._drain()
        self._drain(stopping=True)
        while self.pending() and time.monotonic() < self._deadline:
            time.sleep(min(max(self._backoff, 0.05), 0.5))
            self._drain(stopping=True)
        if self.pending():
            self._spill_held()

    def _drain(self, stopping: bool = False) -> None:
        self._drain_queue()
        if self._claimed and not self._held:
            for path in self._claimed:  # every trace read back from them is written now
                path.unlink(missing_ok=True)
            self._claimed = []
        if not self._held or (time.monotonic() < self._retry_at and not stopping):
            return
        while self._held:
            batch = self._held[:self.batch_size]
            keep = self._write(batch)
            if keep is None:
                return  # the store is not taking traces: all stay held, retried after a wait
            self._held[:len(batch)] = keep
            if keep:
                return  # traces refused for now: retried at the next drain

    def _spill_held(self) -> None:
        """Keep what the store did not take in a spill file; count it lost if that fails too."""
        self._drain_queue()
        held, self._held = self._held, []
        if self.spill is None:
            self.failed += len(held)
            log.error("%d traces not written: the store did not take them before shutdown (no store.spill_path)",
                      len(held))
            return
        path = self.spill.with_name(f"{self.spill.name}.{os.getpid()}.jsonl")
        try:
            with path.open("ab") as f:
                f.write(b"".join(map(trace_json, held)))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self.failed += len(held)
            log.error("%d traces not written: the store did not take them and %s could not be written: %s",
                      len(held), path, e.strerror)
            return
        self.spilled += len(held)
        log.error("the store did not take %d traces before shutdown: kept in %s, written at the next start",
                  len(held), path)

    def _read_spills(self, spill: Path) -> None:
        """Take the traces of earlier processes' spill files (claimed by renaming, so that one of several
        workers starting together takes each file)."""
        stale = [p for p in spill.parent.glob(f"{spill.name}.*.claimed-*") if not _alive(p.suffix.split("-")[-1])]
        for path in sorted([*spill.parent.glob(f"{spill.name}.*.jsonl"), *stale]):
            claimed = path.with_suffix(f".claimed-{os.getpid()}")
            try:
                path.rename(claimed)
                lines = claimed.read_bytes().splitlines()
            except OSError:
                continue  # another worker took it
            for line in lines:
                try:
                    self._held.append(trace_of_json(line))
                except (orjson.JSONDecodeError, TypeError) as e:
                    log.error("%s: a line that is not a trace was skipped: %s", claimed, e)
            self.unspilled += len(lines)
            self._claimed.append(claimed)
            log.warning("writing %d traces kept in %s by a process that stopped while the store was down",
                        len(lines), path)

    def _drain_queue(self) -> None:
        while True:
            try:
                self._held.append(self._q.get_nowait())
            except queue.Empty:
                return

    def _write(self, batch: list[Trace]) -> list[Trace] | None:
        """Write a batch. Returns the traces still to write, or None when the store does not answer."""
        try:
            self.store.write(batch)
        except Exception as e:  # noqa: BLE001 - any store failure is handled the same way
            error: Exception = e
        else:
            self._recovered()
            self._count(batch)
            return []
        if not self.store.ping():
            self._outage(error)
            return None
        # The store answers but refused the batch: write trace by trace to find the ones it refuses.
        # Once a few fail with none written, the rest wait: the trouble may be the store's (a lock,
        # a full disk), and each try may be slow.
        wrote: list[Trace] = []
        failures: list[tuple[Trace, Exception]] = []
        rest: list[Trace] = []
        for i, t in enumerate(batch):
            if not wrote and len(failures) >= REFUSALS:
                rest = batch[i:]
                break
            try:
                self.store.write([t])
                wrote.append(t)
            except Exception as e:  # noqa: BLE001
                failures.append((t, e))
        self._count(wrote)
        keep = []
        for t, why in failures:
            self._tries[t.id] = n = self._tries.get(t.id, 0) + 1
            if n >= REFUSALS:
                del self._tries[t.id]
                self.failed += 1
                log.error("trace %s refused by the store %d times, dropped: %s", t.id, n, why)
            else:
                keep.append(t)
        if wrote:
            self._recovered()
        else:
            self._outage(failures[0][1])
        return keep + rest

    def _count(self, traces: list[Trace]) -> None:
        updates = sum(1 for t in traces if t.revision)
        self.updated += updates
        self.written += len(traces) - updates

    def _wait(self) -> None:
        self._backoff = min(MAX_BACKOFF, max(0.2, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff

    def _outage(self, error: Exception) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = self._last_log = now
            log.error("store not taking traces, holding them until it does: %s", error)
        elif now - self._last_log >= LOG_EVERY:
            self._last_log = now
            log.error("store not taking traces for %.0f s, holding %d: %s", now - self._outage_since,
                      self.pending(), error)
        self._wait()

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.warning("store reachable again after %.1f s; writing %d held traces",
                        time.monotonic() - self._outage_since, self.pending())
        self._outage_since = None
        self._backoff = self._retry_at = 0.0

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued (waiting up to `timeout` for a store that is down), then stop."""
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout + 5)


def stop_timeout(spill: Path | None) -> float:
    """How long a stopping writer waits for a store that is down: with a spill file, only a short while,
    since nothing is lost either way."""
    return 5.0 if spill is not None else 30.0


def trace_json(trace: Trace) -> bytes:
    """A trace as one line of JSON, as spill files and the writer process take it (numpy numbers as numbers:
    a learned router's score is one)."""
    return orjson.dumps(trace, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


def trace_of_json(line: bytes) -> Trace:
    """A trace from its `trace_json` line."""
    d = orjson.loads(line)
    d["calls"] = [Call(**c) for c in d.get("calls", [])]
    return Trace(**d)


def _alive(pid: str) -> bool:
    """Whether a process with this id runs (a spill file it claimed and did not finish is taken over)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True

