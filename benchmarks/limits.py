"""Rate limits and budgets: what they cost per request, and how well they hold across replicas.

Prints three figures, and the response cache's:
- added latency per request of the key lookup (`Gateway.authenticate`: a virtual key, found in the
  replica's cache) + the limit check (`Limiter.admit` before routing, `settle` after the answer) for a
  key with rpm, tpm and day/month budgets on itself and its team, against a config key without limits
  in the same gateway and run (p50 and p99, microseconds);
- budget overshoot: two gateway replicas on one SQLite store (real HTTP, fake upstream answering in
  `--delay` seconds), 64 clients at once until every one is refused; the spend from the stored traces
  against the budget;
- rate-limit accuracy: two replicas' limiters on one store, syncing every second, offered twice the
  limit for `--minutes` minutes on a simulated clock; requests admitted per minute against the limit;
- a response cache hit's latency against the same request sent past the cache (`cache-control: no-cache`).

    python benchmarks/limits.py [--delay 0.05] [--minutes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import urllib3

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from aiohttp.test_utils import make_mocked_request  # noqa: E402

from gearshift.gateway.app import Gateway  # noqa: E402
from gearshift.gateway.limits import Limiter  # noqa: E402
from gearshift.gateway.server import running  # noqa: E402
from gearshift.principal import Allowance, Principal  # noqa: E402
from gearshift.request import ChatRequest  # noqa: E402
from gearshift.store.sqlite import SQLiteStore  # noqa: E402
from gearshift.trace import Call, Trace  # noqa: E402
from tests.support.fake_upstream import FakeUpstream  # noqa: E402
from tests.support.gateway_helpers import gateway_config, settle  # noqa: E402

sys.path.insert(0, str(HERE))
from keys import keyed_gateway  # noqa: E402  (benchmarks/keys.py: the same keyed gateway)

HI = [{"role": "user", "content": "Say ok."}]


async def _per_request(gw: Gateway, token: str, req: ChatRequest, trace: Trace, n: int) -> list[float]:
    """Microseconds of each request's key lookup, limit check and settlement, as the pipeline runs them."""
    request = make_mocked_request("POST", "/v1/chat/completions", headers={"Authorization": f"Bearer {token}"})
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        principal = await gw.authenticate(request)
        adm = gw.limiter.admit(principal, req)
        gw.limiter.settle(adm, trace)
        out.append((time.perf_counter() - t0) * 1e6)
        if i % 1000 == 999:
            gw.limiter.sync()  # as the background loop would, about once a second
    return out


def check_latency(n: int = 20_000) -> None:
    """A virtual key with limits on itself and its team, against a config key without any, in one gateway."""
    full = {"rpm": 10**9, "tpm": 10**12, "usd_day": 10**6, "usd_month": 10**7}
    gw, token = keyed_gateway(Path(tempfile.mkdtemp(prefix="gearshift-limits-")), {"search": {"limits": full}},
                              {"name": "virtual", "team": "search", **full})
    req = ChatRequest(body={"model": "auto", "messages": HI, "max_tokens": 5})
    trace = Trace(router="r", requested_model="m", calls=[Call(model="m", role="primary", input_tokens=12,
                                                               output_tokens=5, cost_usd=0.00001)])

    async def run() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"config key, no limits": [], "virtual key + limits": []}
        for _ in range(4):  # interleaved, so both see the same machine
            times["config key, no limits"] += await _per_request(gw, "k-config-0009", req, trace, n // 4)
            times["virtual key + limits"] += await _per_request(gw, token, req, trace, n // 4)
        return times

    times = asyncio.run(run())
    gw.store.close()
    for name, ts in times.items():
        a = np.array(ts[len(ts) // 10:])  # after warm-up
        print(f"  {name:22s}: p50 {np.percentile(a, 50):6.1f} us, p99 {np.percentile(a, 99):6.1f} us")
    base, full_path = (np.percentile(times[k][len(times[k]) // 10:], 50) for k in times)
    print(f"  added by key lookup + budget + rate limits at p50: {full_path - base:.1f} us "
          f"({(full_path - base) / 1000:.4f} ms; goal < 0.1 ms)")


def cache_hit_latency(n: int = 300) -> None:
    """A response cache hit against the same request sent past the cache, through a real gateway."""
    os.environ.setdefault("GS_TEST_UPSTREAM_KEY", "sk-bench")
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream.running(models=("fake-small", "fake-large")) as up:
        cfg = gateway_config(up.url, Path(tmp), routers={
            "gearshift/cached": {"kind": "fixed", "model": "small", "cache": {"any_temperature": True}}})
        http = urllib3.PoolManager()
        body = json.dumps({"model": "gearshift/cached", "messages": HI, "max_tokens": 5})
        with running(cfg) as gw:
            url = gw.url + "/v1/chat/completions"
            http.request("POST", url, body=body)  # fills the cache
            times: dict[str, list[float]] = {"uncached": [], "cache hit": []}
            for _ in range(n):
                for name, headers in (("uncached", {"cache-control": "no-cache"}), ("cache hit", {})):
                    t0 = time.perf_counter()
                    r = http.request("POST", url, body=body, headers=headers)
                    times[name].append((time.perf_counter() - t0) * 1000)
                    assert r.status == 200 and r.headers["x-gearshift-cache"] == ("hit" if not headers else "bypass")
    p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
    print(f"  uncached p50 {p50['uncached']:.2f} ms (fake upstream answering at once), cache hit p50 "
          f"{p50['cache hit']:.2f} ms: {p50['cache hit'] / p50['uncached']:.2f}x")


def budget_overshoot(delay: float, concurrency: int = 64) -> None:
    os.environ.setdefault("GS_TEST_UPSTREAM_KEY", "sk-bench")
    budget = 0.02  # USD a day: ~700 answers of the `large` model here
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream.running(models=("fake-small", "fake-large")) as up:
        cfg = gateway_config(up.url, Path(tmp), client_keys=[{"name": "app", "key": "k-app",
                                                              "limits": {"usd_day": budget}}])
        http = urllib3.PoolManager(maxsize=concurrency)
        body = json.dumps({"model": "gearshift/strong", "messages": HI, "max_tokens": 5})
        with running(cfg) as a, running(cfg) as b:
            up.delay(delay, times=None)

            def client(i: int) -> int:
                gw, ok = (a, b)[i % 2], 0
                while http.request("POST", gw.url + "/v1/chat/completions", body=body,
                                   headers={"Authorization": "Bearer k-app"}).status == 200:
                    ok += 1
                return ok

            t0 = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                admitted = sum(pool.map(client, range(concurrency)))
            seconds = time.perf_counter() - t0
            settle(a)
            settle(b)
            spent = sum(t["cost_usd"] for t in a.gateway.store.traces() if t["status"] == 200)
            one = max(t["cost_usd"] for t in a.gateway.store.traces() if t["status"] == 200)
    rate = spent / seconds
    print(f"  2 replicas, concurrency {concurrency}, upstream {delay * 1000:.0f} ms: {admitted} answered in "
          f"{seconds:.1f} s, spent ${spent:.5f} of ${budget:.5f}: overshoot ${spent - budget:.5f} "
          f"({(spent - budget) / budget:+.1%}; {(spent - budget) / one:.0f} answers of ${one:.7f})")
    print(f"  bound: (replicas - 1) x spend rate x sync (1 s) + in flight = ${rate:.5f} + {concurrency} x ${one:.7f} "
          f"= ${rate + concurrency * one:.5f}")


def rate_accuracy(minutes: int, rpm: int = 600, replicas: int = 2) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "limits.db")
        start = 1_899_999_960.0  # a minute's start
        now = [start]

        def clock() -> float:
            return now[0]

        limiters = [Limiter(store, clock) for _ in range(replicas)]
        key = Principal(name="app", allowance=Allowance(rpm=rpm))
        req = ChatRequest(body={"model": "m", "messages": HI, "max_tokens": 5})
        offered = 2 * rpm  # per minute, spread evenly over the replicas and the minute
        step = 60.0 / offered
        admitted: dict[int, int] = {}
        next_sync = start + 1.0
        for i in range(offered * minutes):
            now[0] = start + i * step
            if now[0] >= next_sync:
                for lim in limiters:
                    lim.sync()
                next_sync += 1.0
            try:
                limiters[i % replicas].admit(key, req)
            except Exception:  # noqa: BLE001 - refused: counted by its absence
                continue
            minute = int(now[0] // 60)
            admitted[minute] = admitted.get(minute, 0) + 1
    counts = [admitted.get(m, 0) for m in sorted(admitted)]
    errors = [(c - rpm) / rpm for c in counts]
    print(f"  {replicas} replicas, sync 1 s, offered {offered}/min against rpm {rpm} for {minutes} min: admitted "
          f"per minute {counts}; error {', '.join(f'{e:+.1%}' for e in errors)} (goal within 5%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delay", type=float, default=0.05, help="seconds the fake upstream takes per answer")
    ap.add_argument("--minutes", type=int, default=3)
    args = ap.parse_args()
    print("key lookup + limit check per request (in-process, one gateway):")
    check_latency()
    print("response cache (HTTP, one gateway):")
    cache_hit_latency()
    print("budget overshoot (HTTP, one SQLite store):")
    budget_overshoot(args.delay)
    print("rate-limit accuracy (simulated clock, one SQLite store):")
    rate_accuracy(args.minutes)


if __name__ == "__main__":
    main()
