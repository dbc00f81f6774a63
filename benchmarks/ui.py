"""Dashboard data endpoints on a big store: p50/p95 load time of each page's JSON over real HTTP.

Fills a SQLite store with N synthetic traces spread over D days (a cascade: primary, a gate, an
escalation for one in eight, a shadow call for one in ten; three client keys; two routers), starts
`gearshift ui` on it, and times each data endpoint (as an admin, bearer key) R times. The issue's
goal is p95 under 300 ms on 1,000,000 traces.

    python benchmarks/ui.py [--traces 1000000] [--days 30] [--repeat 10] [--slow 10] [--db PATH (kept, reused)]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gearshift.gateway.server import free_port  # noqa: E402
from gearshift.store.sqlite import SQLiteStore  # noqa: E402
from gearshift.trace import Call, Trace  # noqa: E402

ADMIN = "sk-bench-ui-" + os.urandom(8).hex()
ENDPOINTS = ("overview?hours=24", "overview?hours=168", "traces", "traces?escalated=yes&client=app",
             "traces?verdict=fail", "routers?hours=24", "keys?hours=24", "watch", "ab?hours=24")


def fill(db: Path, n: int, days: float, batch: int = 5000) -> None:
    store = SQLiteStore(db)
    rng = random.Random(0)
    now = time.time()
    start = now - days * 86400
    step = days * 86400 / n
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        rows = []
        for i in range(lo, min(n, lo + batch)):
            escalate, shadow = rng.random() < 0.125, rng.random() < 0.1
            calls = [Call(model="small", role="primary", input_tokens=80, output_tokens=120, cost_usd=0.00012,
                          latency_ms=300 + rng.random() * 200),
                     Call(model="final_answer", role="gate")]
            verdicts = [{"gate": "final_answer", "model": "small", "passed": not escalate}]
            if escalate:
                calls.append(Call(model="large", role="escalation", input_tokens=80, output_tokens=150,
                                  cost_usd=0.0053, latency_ms=900 + rng.random() * 400))
            if shadow and not escalate:
                calls.append(Call(model="large", role="shadow", input_tokens=80, output_tokens=150, cost_usd=0.0053))
                verdicts += [{"gate": "shadow_agreement", "model": "small", "passed": rng.random() < 0.9,
                              "score": 1.0, "method": "final_answer"},
                             {"gate": "shadow_reference", "model": "large", "passed": True}]
            router = "gearshift/cascade" if i % 5 else "gearshift/strong"
            t = Trace(router=router, requested_model=router, route=["small", "large"],
                      final_model="large" if escalate else "small", prompt="What is 2+2?", response="4",
                      client=("app", "batch", "web")[i % 3], calls=calls, verdicts=verdicts,
                      latency_ms=sum(c.latency_ms for c in calls), shadowed=shadow and not escalate)
            t.created = start + i * step
            rows.append(t)
        store.write(rows)
        if lo % 100_000 == 0:
            print(f"  {lo + len(rows):,} traces written ({time.perf_counter() - t0:.0f} s)", flush=True)
    store.close()


def config(folder: Path, db: Path) -> Path:
    cfg = {"models": {"small": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "upstream_id": "small",
                                "price": {"input": 0.6, "output": 0.6}, "rank": 1},
                      "large": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "upstream_id": "large",
                                "price": {"input": 10, "output": 30}, "rank": 9}},
           "routers": {"gearshift/cascade": {"kind": "cascade", "tiers": [{"model": "small"}, {"model": "large"}]},
                       "gearshift/strong": {"kind": "fixed", "model": "large"}},
           "client_keys": [{"name": "ops", "key": ADMIN, "admin": True}],
           "store": {"url": f"sqlite:///{db}"}}
    path = folder / "ui.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--slow", type=float, default=10.0, help="an endpoint slower than this many seconds is read twice only")
    ap.add_argument("--db", type=Path, default=None, help="a store to fill once and reuse")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gearshift-ui-bench-"))
    db = args.db or folder / "traces.db"
    if not db.exists():
        print(f"filling {db} with {args.traces:,} traces over {args.days:g} days")
        fill(db, args.traces, args.days)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gearshift.cli", "ui", "--config", str(config(folder, db)),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/ui/api/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url.replace("/api/", "/login"), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "gearshift ui did not start"
                time.sleep(0.2)
        print(f"{'endpoint':40s} {'p50 ms':>9s} {'p95 ms':>9s} {'bytes':>9s}")
        for ep in ENDPOINTS:
            times, size = [], 0
            for k in range(args.repeat + 1):  # the first read warms the page cache and imports; not counted
                if k == 1 and times[0] > args.slow * 1000:
                    break  # far from the goal: one more read says enough
                req = urllib.request.Request(url + ep, headers={"Authorization": f"Bearer {ADMIN}"})
                t = time.perf_counter()
                with urllib.request.urlopen(req, timeout=3600) as r:
                    size = len(r.read())
                times.append((time.perf_counter() - t) * 1000)
            if len(times) == 1:  # too slow to repeat: time one more read
                req = urllib.request.Request(url + ep, headers={"Authorization": f"Bearer {ADMIN}"})
                t = time.perf_counter()
                with urllib.request.urlopen(req, timeout=3600) as r:
                    size = len(r.read())
                times.append((time.perf_counter() - t) * 1000)
            p50, p95 = np.percentile(times[1:], [50, 95])
            print(f"{ep:40s} {p50:9.1f} {p95:9.1f} {size:9d}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
