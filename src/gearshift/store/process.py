"""Trace writing in a child process: traces handed over survive the gateway's own death.

The loop only turns each trace into one JSON line (`orjson`, a few microseconds) and, every
`SEND_INTERVAL`, hands what it gathered to a pipe in one non-blocking write. The child (`python -m
gearshift.store.process`) runs the same `TraceWriter` as the thread did, with its outage holding,
refusals and spill file, and publishes its counts in a small shared memory block that `pending()`,
`/health` and `/metrics` read.

The child ignores SIGINT and SIGTERM: it stops when the pipe closes, after writing what it has. The
gateway closes the pipe when it stops, and the kernel closes it when the gateway is killed, so a
killed gateway no longer loses the traces it had handed over (a writer thread loses its whole
unwritten window). A child that dies is replaced by a writer thread in the gateway (logged, with the
traces it lost counted as failed). It was also meant to take the writes' share of the interpreter
lock off the event loop; measured, CPU per request and throughput stayed within noise of the thread
(docs/deploy.md), so durability is the reason it is the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from operator import attrgetter
from pathlib import Path

import orjson

from gearshift import logs
from gearshift.store import STORES
from gearshift.store.base import TraceStore
from gearshift.store.writer import COUNTS, TraceWriter, stop_timeout
from gearshift.trace import Call, Trace

log = logging.getLogger("gearshift.store")

SEND_INTERVAL = 0.02  # seconds the loop gathers traces before one write to the pipe
PIPE_BYTES = 1 << 20  # asked of the kernel (Linux caps it at /proc/sys/fs/pipe-max-size)
# The shared counts, as doubles: the child's, published after each read and at least every PUBLISH seconds.
FIELDS = ("received", "written", "updated", "failed", "dropped", "pending", "outage_since", "spilled",
          "unspilled")
LAYOUT = struct.Struct(f"{len(FIELDS)}d")
_RECEIVED, _PENDING, _OUTAGE = (FIELDS.index(f) for f in ("received", "pending", "outage_since"))
PUBLISH = 0.05
# At load (a read of BUSY_LINES traces or more), the child reads the pipe at most every READ_PAUSE seconds: what the
# loop hands over meanwhile waits in the pipe, which outlives the gateway as well as the child's memory does, and
# is read in fewer, larger chunks (a wake-up per SEND_INTERVAL cost the child as much CPU per trace as decoding
# it, measured by benchmarks/trace_writer.py). A quiet gateway's few traces are read at once.
READ_PAUSE = 0.1
BUSY_LINES = 10
# A trace crosses the pipe as its field values in order, not as an object: half the encoding time on the
# loop. Both ends run the same code (the child is started from this installation), so the order agrees.
TRACE_FIELDS = tuple(f.name for f in dataclasses.fields(Trace) if f.name != "calls")
_CALLS_AT = [f.name for f in dataclasses.fields(Trace)].index("calls")  # where the calls go among them
_trace_values = attrgetter(*TRACE_FIELDS)
_call_values = attrgetter(*(f.name for f in dataclasses.fields(Call)))


class ProcessWriter:
    """The gateway's side: `put` queues a trace's JSON line; the child process writes it to the store.

    It has TraceWriter's face (put, pending, outage_seconds, the counts, close) so that the gateway reads
    either the same way."""

    def __init__(self, store: TraceStore, url: str, base_dir: str, password_env: str | None,
                 batch_size: int = 500, flush_interval: float = 0.2, max_held: int = 100_000,
                 spill: str | Path | None = None) -> None:
        self.store = store  # the gateway's own connection: shadow pairs and readers use it, never for traces
        self.spill = Path(spill) if spill is not None else None
        self.max_held = max_held
        self._lines: list[bytes] = []  # JSON lines not yet handed to the pipe
        self._unsent = b""  # the part of the last write the pipe did not take
        self._sent = 0  # traces handed to the pipe
        self._lost = 0  # traces handed to a child that died before writing them
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._fallback: TraceWriter | None = None
        self._settings = (batch_size, flush_interval, max_held)
        self._shared = tempfile.TemporaryFile()  # noqa: SIM115 - mapped for the writer's life
        self._shared.write(LAYOUT.pack(*(-1.0 if f == "outage_since" else 0.0 for f in FIELDS)))
        self._shared.flush()
        self._counts = mmap.mmap(self._shared.fileno(), LAYOUT.size)
        read, self._pipe = os.pipe()
        with contextlib.suppress(OSError):  # F_SETPIPE_SZ: room for bursts while the child sleeps
            fcntl.fcntl(self._pipe, 1031, PIPE_BYTES)
        level, fmt = logs.current()
        args = [sys.executable, "-m", "gearshift.store.process", url, base_dir, password_env or "",
                str(batch_size), str(flush_interval), str(max_held), str(self.spill or ""),
                str(self._shared.fileno()), level, fmt]
        # Its own session: a terminal's Ctrl-C, sent to the gateway's process group, must not stop the
        # writer before the gateway has handed it the last traces.
        self._child = subprocess.Popen(args, stdin=read, pass_fds=(self._shared.fileno(),), start_new_session=True)
        os.close(read)
        os.set_blocking(self._pipe, False)

    def put(self, trace: Trace) -> None:
        """Queue a trace; never blocks. Past `max_held` unwritten traces, the trace is dropped (counted)."""
        if self._fallback is not None:
            self._fallback.put(trace)
            return
        if self._pipe < 0 or self.pending() >= self.max_held:  # closed, or full
            self._dropped += 1
            return
        self._lines.append(pack(trace))
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a script, the simulation): hand it over at once
                self._send()
                return
            self._timer = loop.call_later(SEND_INTERVAL, self._send)

    def _send(self) -> None:
        self._timer = None
        if self._lines:
            self._sent += len(self._lines)
            self._unsent += b"".join(self._lines)
            self._lines = []
        while self._unsent:
            try:
                n = os.write(self._pipe, self._unsent)
            except BlockingIOError:  # the pipe is full: the child is behind; try again shortly
                break
            except OSError as e:  # the child is gone
                self._child_died(e)
                return
            self._unsent = self._unsent[n:]
        if self._unsent and self._timer is None:
            with contextlib.suppress(RuntimeError):  # no loop: the next put, or close, sends it
                self._timer = asyncio.get_running_loop().call_later(SEND_INTERVAL, self._send)

    def _child_died(self, error: OSError) -> None:
        c = self._read()
        lost = max(0, self._sent - int(c["written"] + c["updated"] + c["failed"] + c["dropped"]))
        self._lost += lost
        log.error("the trace writer process stopped (%s, exit status %s): %d traces it had not written are lost; "
                  "writing traces from a thread of this process from now on", error, self._child.poll(), lost)
        self._unsent, self._lines = b"", []
        batch_size, flush_interval, max_held = self._settings
        self._fallback = TraceWriter(self.store, batch_size, flush_interval, max_held, self.spill)

    def _read(self) -> dict[str, float]:
        return dict(zip(FIELDS, LAYOUT.unpack_from(self._counts), strict=True))

    def counts(self) -> dict[str, int]:
        """The child's counts, with the loss of a child that died, and then the thread's that replaced it."""
        c = {name: int(v) for name, v in self._read().items() if name in COUNTS}
        c["failed"] += self._lost
        c["dropped"] += self._dropped
        if self._fallback is not None:
            more = self._fallback.counts()
            c = {name: n + more[name] for name, n in c.items()}
        return c

    written = property(lambda self: self.counts()["written"])
    updated = property(lambda self: self.counts()["updated"])
    failed = property(lambda self: self.counts()["failed"])
    dropped = property(lambda self: self.counts()["dropped"])

    def pending(self) -> int:
        """Traces queued here, in the pipe, or held by the child, not yet written."""
        if self._fallback is not None:
            return self._fallback.pending()
        c = LAYOUT.unpack_from(self._counts)  # read on every put: no dict of the names
        return max(0, len(self._lines) + self._sent - int(c[_RECEIVED]) + int(c[_PENDING]))

    def outage_seconds(self) -> float | None:
        """How long the store has not been taking traces, or None while it does."""
        if self._fallback is not None:
            return self._fallback.outage_seconds()
        since = LAYOUT.unpack_from(self._counts)[_OUTAGE]
        return None if since < 0 else time.monotonic() - since

    def close(self, timeout: float = 30.0) -> None:
        """Hand over everything queued, then let the child write it (waiting up to `timeout` for a store
        that is down) and stop. A second close does nothing (the pipe's number may belong to another file by then)."""
        if self._pipe < 0:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fallback is None:
            os.set_blocking(self._pipe, True)
            self._send()
        with contextlib.suppress(OSError):
            os.close(self._pipe)
        self._pipe = -1
        try:
            self._child.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            log.error("the trace writer process did not stop within %.0f s; stopping it", timeout + 10)
            self._child.kill()
            self._child.wait()
        if self._fallback is not None:
            self._fallback.close(timeout)


def pack(trace: Trace) -> bytes:
    """One trace as the pipe carries it: a line of JSON (numpy numbers as numbers: a learned score is one)."""
    return orjson.dumps((_trace_values(trace), [_call_values(c) for c in trace.calls]),
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


def unpack(line: bytes) -> Trace:
    """The trace of a `pack` line."""
    values, calls = orjson.loads(line)
    if len(values) != len(TRACE_FIELDS):
        raise TypeError(f"a trace of {len(values)} fields, not {len(TRACE_FIELDS)}")
    # Positional, not by name: the child's time per trace (no dict of the names built and matched).
    values.insert(_CALLS_AT, [Call(*c) for c in calls])
    return Trace(*values)


def _publish(counts: mmap.mmap, received: int, writer: TraceWriter | None, failed: int, waiting: int,
             unopened_since: float | None) -> None:
    w = writer
    since = w.outage_since if w is not None else unopened_since
    values = (received, w.written if w else 0, w.updated if w else 0, (w.failed if w else 0) + failed,
              w.dropped if w else 0, (w.pending() if w else 0) + waiting, -1.0 if since is None else since,
              w.spilled if w else 0, w.unspilled if w else 0)
    LAYOUT.pack_into(counts, 0, *map(float, values))


def main(argv: list[str]) -> None:
    """The child: read JSON lines from stdin into a TraceWriter until stdin closes, then close it."""
    url, base_dir, password_env, batch, interval, held, spill, fd, level, fmt = argv
    batch_size, flush_interval, max_held = int(batch), float(interval), int(held)
    logs.configure(level, fmt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    counts = mmap.mmap(int(fd), LAYOUT.size)
    writer: TraceWriter | None = None
    waiting: list[Trace] = []  # read before the store could be opened
    received = failed = 0
    retry_at = 0.0
    unopened_since: float | None = None  # the store could not be opened since then: an outage
    stdin = sys.stdin.buffer.fileno()
    rest = b""
    open_ = True
    while open_:
        if writer is None and time.monotonic() >= retry_at:
            writer = _open(url, base_dir, password_env, batch_size, flush_interval, max_held, spill or None,
                           quiet=unopened_since is not None)
            retry_at = time.monotonic() + 1.0
            if writer is None and unopened_since is None:
                unopened_since = time.monotonic()
            if writer is not None:
                for t in waiting:
                    writer.put(t)
                waiting = []
        ready, _, _ = select.select([stdin], [], [], PUBLISH)
        if ready:
            chunk = os.read(stdin, 1 << 20)
            open_ = bool(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                try:
                    t = unpack(line)
                except (orjson.JSONDecodeError, TypeError) as e:
                    failed += 1
                    log.error("the trace writer process got a line that is not a trace: %s", e)
                    continue
                if writer is not None:
                    writer.put(t)
                elif len(waiting) < max_held:
                    waiting.append(t)
                else:
                    failed += 1
            received += len(lines)
        _publish(counts, received, writer, failed, len(waiting), unopened_since)
        if ready and open_ and len(lines) >= BUSY_LINES:
            time.sleep(READ_PAUSE)  # see READ_PAUSE
    if writer is None:
        log.error("%d traces not written: the store could not be opened", len(waiting))
        return
    writer.close(stop_timeout(writer.spill))
    _publish(counts, received, writer, failed, 0, None)


def _open(url: str, base_dir: str, password_env: str, batch_size: int, flush_interval: float, max_held: int,
          spill: str | None, quiet: bool) -> TraceWriter | None:
    try:
        store = STORES[url.split("://", 1)[0]].open_url(url, base_dir, os.environ.get(password_env) if password_env
                                                         else None)
    except Exception as e:  # noqa: BLE001 - retried: the store may be starting
        (log.debug if quiet else log.error)("the trace writer process cannot open the store yet; "
                                            "holding traces and trying every second: %s", e)
        return None
    return TraceWriter(store, batch_size, flush_interval, max_held, spill)


if __name__ == "__main__":
    main(sys.argv[1:])
