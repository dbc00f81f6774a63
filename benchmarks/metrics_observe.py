"""Per-request metric work: `Counters.observe` on a one-call trace, in microseconds per request; and,
when prometheus_client is importable, the same updates in its multiprocess mode (the alternative
weighed in watch/prometheus.py).

    python benchmarks/metrics_observe.py [--requests 1000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import timeit
from collections.abc import Callable

from gearshift.trace import Call, Trace
from gearshift.watch.prometheus import LATENCY_BUCKETS, Counters


def trace() -> Trace:
    t = Trace(router="gearshift/auto", requested_model="gearshift/auto", final_model="cheap", latency_ms=3.2)
    t.calls.append(Call(model="cheap", role="primary", input_tokens=12, output_tokens=5, cost_usd=1e-6,
                        latency_ms=2.1))
    return t


def client_multiprocess() -> Callable[[Trace], None] | None:
    """The same counters and histograms through prometheus_client with PROMETHEUS_MULTIPROC_DIR set."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gearshift-prom-")
    try:
        from prometheus_client import Counter, Histogram
    except ImportError:
        return None
    req = Counter("r", "", ["router", "model", "status", "endpoint"])
    calls = Counter("c", "", ["model", "role", "status"])
    cost = Counter("u", "", ["model", "role"])
    tokens = Counter("t", "", ["model", "router", "direction"])
    latency = Histogram("l", "", ["router"], buckets=LATENCY_BUCKETS)
    upstream = Histogram("p", "", ["model", "role"], buckets=LATENCY_BUCKETS)

    def observe(t: Trace) -> None:
        req.labels(t.router, t.final_model, "200", "chat").inc()
        for c in t.calls:
            calls.labels(c.model, c.role, "200").inc()
            cost.labels(c.model, c.role).inc(c.cost_usd)
            upstream.labels(c.model, c.role).observe(c.latency_ms / 1000)
            tokens.labels(c.model, t.router, "input").inc(c.input_tokens)
            tokens.labels(c.model, t.router, "output").inc(c.output_tokens)
        latency.labels(t.router).observe(t.latency_ms / 1000)

    return observe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    traces = [trace() for _ in range(args.requests)]
    ways: dict[str, Callable[[Trace], None]] = {"Counters.observe": Counters().observe}
    other = client_multiprocess()
    if other is not None:
        ways["prometheus_client multiprocess"] = other
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeat):  # interleaved, so a noisy neighbour slows both alike
        for name, observe in ways.items():
            seconds = timeit.timeit(lambda o=observe: [o(t) for t in traces], number=5)  # type: ignore[misc]
            times[name].append(seconds / 5 / len(traces) * 1e6)
    for name, ts in times.items():
        ts.sort()
        print(f"{name}: {ts[0]:.2f} us per request (min of {len(ts)}), median {ts[len(ts) // 2]:.2f} us")


if __name__ == "__main__":
    main()
