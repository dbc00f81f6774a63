"""Trace store throughput: SQLite (the baseline) and PostgreSQL, same traces, same batches, one run.

Writes N traces (one call each, and a shadow rewrite of a tenth of them, as the gateway does) in the
trace writer's batches, then reads them back with their calls. Prints traces per second and each
store's ratio to SQLite. PostgreSQL is started from Debian's package in a temporary folder (as the
tests do), or taken from --pg-url.

    python benchmarks/store.py [--traces 20000] [--batch 500] [--pg-url postgresql://...]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gearshift.store import TraceStore, open_store  # noqa: E402
from gearshift.trace import Call, Trace  # noqa: E402


def make_traces(n: int) -> list[Trace]:
    out = []
    for i in range(n):
        t = Trace(router="gearshift/auto", requested_model="gearshift/auto", reason="rule short",
                  route=["small", "large"], final_model="small", metadata={"tier": "free"},
                  prompt=f"Question {i}: what is {i} + {i}?", response=str(2 * i),
                  calls=[Call(model="small", role="primary", input_tokens=20, output_tokens=5, cost_usd=1e-5,
                              latency_ms=120.0, response=str(2 * i))])
        t.created = 1_700_000_000 + i
        out.append(t)
    return out


def run(store: TraceStore, traces: list[Trace], batch: int) -> dict[str, float]:
    t0 = time.perf_counter()
    for lo in range(0, len(traces), batch):
        store.write(traces[lo:lo + batch])
    shadowed = []
    for t in traces[::10]:
        s = copy.copy(t)
        s.calls = [*t.calls, Call(model="large", role="shadow", cost_usd=1e-4, response=t.response)]
        s.shadowed = True
        shadowed.append(s)
    for lo in range(0, len(shadowed), batch):
        store.write(shadowed[lo:lo + batch])
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = sum(1 for _ in store.traces())
    read_s = time.perf_counter() - t0
    assert n == len(traces), (n, len(traces))
    return {"write_per_s": (len(traces) + len(shadowed)) / write_s, "read_per_s": n / read_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--pg-url", default=None, help="an empty PostgreSQL database (default: start one)")
    args = ap.parse_args()
    traces = make_traces(args.traces)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        results["sqlite"] = run(sqlite, traces, args.batch)
        sqlite.close()
    server = None
    url = args.pg_url
    if url is None:
        from tests.support.pg_server import PostgresServer, server_bin

        bin_dir = server_bin()
        if bin_dir is not None:
            root = Path(tempfile.mkdtemp(prefix="gearshift-pg-bench-"))
            server = PostgresServer(root, bin_dir)
            server.start()
            url = server.create_database().replace("postgres@", f"postgres:{server.password}@")
    try:
        if url:
            pg = open_store(url)
            results["postgresql"] = run(pg, traces, args.batch)
            pg.close()
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
    base = results["sqlite"]
    print(f"{args.traces} traces (+{len(traces[::10])} shadow rewrites), batches of {args.batch}")
    print(f"{'store':<12}{'writes/s':>12}{'x sqlite':>10}{'reads/s':>12}{'x sqlite':>10}")
    for name, r in results.items():
        print(f"{name:<12}{r['write_per_s']:>12,.0f}{r['write_per_s'] / base['write_per_s']:>10.2f}"
              f"{r['read_per_s']:>12,.0f}{r['read_per_s'] / base['read_per_s']:>10.2f}")
    if "postgresql" not in results:
        print("postgresql: no server (install Debian's postgresql package, or give --pg-url)")


if __name__ == "__main__":
    main()
