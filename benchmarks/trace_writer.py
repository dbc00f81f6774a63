"""The trace writer's CPU per trace: the child process (`store/process.py`) against SQLite's own floor.

Feeds N traces shaped like the gateway's for a routed chat completion (one serving call with usage and
cost, the rules router's decision; a share of them written again with a shadow pair, as the shadower
does) through the real `ProcessWriter`, at a steady rate on an event loop as the gateway hands them over,
into a real SQLite store in a temporary folder; waits until every write is confirmed and prints the
child's CPU (user + system, from /proc) per trace written. The floor, measured in this process: the same
trace and call rows (`rows.encode`'s, encoded beforehand) written by a plain `executemany` INSERT into
two bare tables without indexes, in batches of the same size, one commit each, with the same journal
(WAL, synchronous=NORMAL). Their ratio is what our layers add (the pipe, decoding, facts, rollups,
indexes, the lookup of stored rows). Every round runs both; the figures are medians with their range.

    python benchmarks/trace_writer.py [--traces 5000] [--rate 800] [--shadow 0.1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from overhead import cpu_seconds  # noqa: E402

from gearshift.store import rows  # noqa: E402
from gearshift.store.process import ProcessWriter  # noqa: E402
from gearshift.store.sqlite import SQLiteStore  # noqa: E402
from gearshift.trace import Call, Trace  # noqa: E402


def make_traces(n: int, shadow: float) -> tuple[list[Trace], list[Trace]]:
    """N traces as the gateway records `benchmarks/overhead.py`'s request, and the shadow revisions of a share."""
    traces, revised = [], []
    every = round(1 / shadow) if shadow > 0 else 0
    for i in range(n):
        t = Trace(router="gearshift/auto", requested_model="gearshift/auto", reason="rules: default -> cheap",
                  route=["cheap", "strong"], final_model="cheap", client="bench", prompt=f"Say ok. ({i})",
                  response="ok", estimated_tokens=5, latency_ms=0.8 + (i % 50) / 10,
                  calls=[Call(model="cheap", role="primary", input_tokens=12, output_tokens=1, cost_usd=2.4e-06,
                              latency_ms=0.6 + (i % 50) / 10, response="ok", started=time.time())])
        t.response = t.calls[0].response  # the gateway hands the call's own string to the trace
        traces.append(t)
        if every and i % every == 0:
            s = copy.copy(t)
            s.revision, s.shadowed = 1, True
            s.calls = [*t.calls, Call(model="strong", role="shadow", input_tokens=12, output_tokens=1,
                                      cost_usd=4.5e-05, latency_ms=1.2, response="ok")]
            passed = i % 3 != 0
            s.verdicts = [{"gate": "shadow_agreement", "model": "cheap", "passed": passed, "score": float(passed),
                           "method": "final_answer", "reasons": []},
                          {"gate": "shadow_reference", "model": "strong", "passed": True, "score": 1.0,
                           "method": "reference", "reasons": []}]
            revised.append(s)
    return traces, revised


async def feed(writer: ProcessWriter, traces: list[Trace], revised: list[Trace], rate: float) -> None:
    """Hand the traces over at `rate` per second, in ticks of 5 ms; each revision one second after its trace."""
    tick = 0.005
    per_tick = max(1, round(rate * tick))
    later: list[tuple[float, Trace]] = []
    by_id = {t.id: t for t in revised}
    start = time.perf_counter()
    for lo in range(0, len(traces), per_tick):
        now = time.perf_counter()
        for t in traces[lo:lo + per_tick]:
            writer.put(t)
            if t.id in by_id:
                later.append((now + 1.0, by_id[t.id]))
        while later and later[0][0] <= now:
            writer.put(later.pop(0)[1])
        await asyncio.sleep(max(0.0, start + (lo // per_tick + 1) * tick - time.perf_counter()))
    for due, t in later:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        writer.put(t)
    await asyncio.sleep(0.1)  # the loop's last hand-over to the pipe (every SEND_INTERVAL) runs on it


def wait_written(writer: ProcessWriter, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        c = writer.counts()
        if c["written"] + c["updated"] >= n:
            return
        if c["failed"] or c["dropped"] or time.monotonic() > deadline:
            raise RuntimeError(f"the writer did not write {n} traces: {c}")
        time.sleep(0.01)


def child_round(n: int, shadow: float, rate: float, tmp: Path) -> float:
    """CPU seconds of the writer process per trace written (revisions count as writes)."""
    url = f"sqlite:///{tmp / 'child.db'}"
    store = SQLiteStore(tmp / "child.db")
    writer = ProcessWriter(store, url, str(tmp), None)
    try:
        warm = make_traces(20, 0)[0]
        for t in warm:
            writer.put(t)
        wait_written(writer, len(warm))  # the child is started and its store open: not counted
        traces, revised = make_traces(n, shadow)
        pid = writer._child.pid
        cpu0 = cpu_seconds(pid)
        asyncio.run(feed(writer, traces, revised, rate))
        wait_written(writer, len(warm) + n + len(revised))
        cpu = cpu_seconds(pid) - cpu0
    finally:
        writer.close()
        store.close()
    assert SQLiteStore(tmp / "child.db").count() == len(warm) + n
    return cpu / (n + len(revised))


FLOOR_SCHEMA = (f"CREATE TABLE t ({', '.join(rows.TRACE_COLS + rows.FACT_COLS)})",
                f"CREATE TABLE c ({', '.join(rows.CALL_COLS)})")


def floor_round(n: int, shadow: float, batch: int, tmp: Path) -> float:
    """CPU seconds per trace of a plain INSERT of the same rows into bare tables (no keys, no indexes)."""
    traces, revised = make_traces(n, shadow)
    batches = [rows.encode(traces[lo:lo + batch]) for lo in range(0, len(traces), batch)]
    batches += [rows.encode(revised[lo:lo + batch]) for lo in range(0, len(revised), batch)]
    db = sqlite3.connect(tmp / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in FLOOR_SCHEMA:
        db.execute(statement)
    insert_t = f"INSERT INTO t VALUES ({','.join('?' * len(rows.TRACE_COLS + rows.FACT_COLS))})"
    insert_c = f"INSERT INTO c VALUES ({','.join('?' * len(rows.CALL_COLS))})"
    cpu0 = time.process_time()
    for trows, crows in batches:
        db.execute("BEGIN")
        db.executemany(insert_t, trows)
        db.executemany(insert_c, crows)
        db.execute("COMMIT")
    cpu = time.process_time() - cpu0
    db.close()
    return cpu / (n + len(revised))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:.1f} us [{min(values) * 1e6:.1f}-{max(values) * 1e6:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=800.0, help="traces handed over per second (overhead.py at c16: ~800)")
    ap.add_argument("--shadow", type=float, default=0.1, help="share of traces written again with a shadow pair")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    # The floor's batches: what the writer takes per flush at this rate (its flush_interval, 0.2 s by default).
    batch = max(1, min(500, round(args.rate * 0.2)))
    child, floor = [], []
    load0 = os.getloadavg()[0]
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="gearshift-tw-") as tmp:
            child.append(child_round(args.traces, args.shadow, args.rate, Path(tmp)))
            floor.append(floor_round(args.traces, args.shadow, batch, Path(tmp)))
    ratios = [c / f for c, f in zip(child, floor, strict=True)]
    writes = args.traces + len(make_traces(args.traces, args.shadow)[1])
    print(f"{args.traces} traces + {writes - args.traces} shadow revisions at {args.rate:.0f}/s, {args.rounds} rounds "
          f"(load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after)")
    print(f"writer process CPU per trace written:  {spread(child)}")
    print(f"floor (bare INSERT, batches of {batch}):  {spread(floor)}")
    print(f"writer / floor: {statistics.median(ratios):.1f}x [{min(ratios):.1f}-{max(ratios):.1f}]")


if __name__ == "__main__":
    main()
