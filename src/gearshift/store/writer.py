"""Trace writing off the response's critical path: enqueue is O(1), a thread writes in batches."""

from __future__ import annotations

import logging
import queue
import threading
import time

from gearshift.store.base import TraceStore
from gearshift.trace import Trace

log = logging.getLogger("gearshift.store")

class TraceWriter:
    """Batches traces into the store from a background thread; `close()` drains every queued trace."""

    def __init__(self, store: TraceStore, batch_size: int = 500, flush_interval: float = 0.2) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.written = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="gearshift-trace-writer", daemon=True)
        self._thread.start()

    def put(self, trace: Trace) -> None:
        """Queue a trace; never blocks."""
        self._q.put(trace)

    def pending(self) -> int:
        return self._q.qsize()

    def _run(self) -> None:
        # Poll rather than block on get(): a put() that must wake a waiting thread costs the event
        # loop a thread switch per request; a put() into a queue nobody waits on costs almost nothing.
        while True:
            stopping = self._stop.wait(self.flush_interval)
            self._drain()
            if stopping:
                self._drain()
                return

    def _drain(self) -> None:
        batch: list[Trace] = []
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Trace):
                batch.append(item)
            if len(batch) >= self.batch_size:
                self._write(batch)
                batch = []
        self._write(batch)

    def _write(self, batch: list[Trace]) -> None:
        if not batch:
            return
        for attempt in range(3):
            try:
                self.store.write(batch)
                self.written += len(batch)
                return
            except Exception as e:  # a locked or full disk must not kill the writer
                log.error("trace write failed (attempt %d): %s", attempt + 1, e)
                time.sleep(0.2 * (attempt + 1))
        self.failed += len(batch)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop."""
        self._stop.set()
        self._thread.join(timeout)
