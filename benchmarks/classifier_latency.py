"""Decision latency of the classifier router: `route()` per request, p50/p99, against the rules router.

Trains a classifier on RouteLLM MMLU with the default features (or loads --artifact), then times
`route()` one request at a time over real prompts (MMLU subjects as metadata, so the metadata and
crossed blocks are exercised; the longest MMLU prompts are ~5,000 characters), and the same for a
rules router with a regex, keywords and a token bound in the same process. Reports p50, p99 and
max per request; the classifier's p99 must stay under 1 ms.

    GEARSHIFT_DATA=../shared/datasets python benchmarks/classifier_latency.py [--requests 3000] [--artifact router.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

from gearshift.config import parse_config
from gearshift.lab.replay import requests
from gearshift.lab.train import TrainSettings, default_features, fit
from gearshift.learned import artifact
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.plan import build_routers
from gearshift.request import ChatRequest


def timings(route, reqs: list[ChatRequest], repeat: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """(wall, CPU) seconds per call, each request timed alone; fresh request objects so no text cache helps.

    Wall time includes any time the OS gave the core to other processes; the thread's CPU time does
    not, so on a shared machine it is the better measure of what routing itself costs.
    """
    wall, cpu = [], []
    gc.disable()
    try:
        for _ in range(repeat):
            for r in reqs:
                fresh = ChatRequest(body=r.body, metadata=r.metadata)
                c0 = time.thread_time_ns()
                t0 = time.perf_counter_ns()
                route(fresh)
                t1 = time.perf_counter_ns()
                c1 = time.thread_time_ns()
                wall.append(t1 - t0)
                cpu.append(c1 - c0)
    finally:
        gc.enable()
    return np.asarray(wall, dtype=float) / 1e9, np.asarray(cpu, dtype=float) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train", type=int, default=6000, help="prompts to train on when no --artifact")
    ap.add_argument("--artifact", default=None)
    ap.add_argument("--learner", default=None, choices=["stack", "logistic", "ridge"],
                    help="learner to train with when no --artifact (default: the default learner)")
    args = ap.parse_args()

    o = datasets.load("routellm/mmlu", drop_contaminated=True)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(o))
    work = Path(args.artifact) if args.artifact else Path("/tmp") / f"gearshift-latency-router-{args.learner}.json"
    if not args.artifact:
        train = o.subset(np.sort(perm[: args.train]))
        print(f"training on {len(train)} MMLU prompts (default features)...", file=sys.stderr)
        settings = TrainSettings(features=default_features(train))
        if args.learner:
            settings = TrainSettings(features=settings.features, learner=args.learner)  # type: ignore[arg-type]
        artifact.save(fit(train, settings), work)
    test = o.subset(np.sort(perm[-args.requests:]))
    config = parse_config({
        "models": {"mixtral": {"provider": "replay", "replay": {"dataset": "routellm/mmlu", "column": W},
                               "price": {"input": 0.6, "output": 0.6}, "rank": 1},
                   "gpt-4": {"provider": "replay", "replay": {"dataset": "routellm/mmlu", "column": S},
                             "price": {"input": 10, "output": 30}, "rank": 10}},
        "routers": {
            "classifier": {"kind": "classifier", "artifact": str(work.resolve())},
            "rules": {"kind": "rules", "default": "mixtral", "rules": [
                {"when": {"min_tokens": 800}, "model": "gpt-4"},
                {"when": {"regex": r"(?i)\b(prove|derive|integral|theorem)\b"}, "model": "gpt-4"},
                {"when": {"keywords": ["calculate", "compute", "how many"]}, "model": "gpt-4"},
                {"when": {"metadata": {"task": ["college_mathematics", "abstract_algebra"]}}, "model": "gpt-4"}]},
        },
    })
    routers = build_routers(config)
    reqs = requests(test)
    chars = np.array([len(r.text()) for r in reqs])
    for name in ("classifier", "rules"):  # warm-up: imports, caches, page faults of the weights
        for r in reqs[:200]:
            routers[name].route(r)
    print(f"{len(reqs)} MMLU requests x {args.repeat}, prompt chars p50 {np.median(chars):.0f} / max {chars.max()}, "
          f"one request per call, Python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"{'router':<12}{'clock':<6}{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}{'max us':>10}{'mean us':>10}")
    result = {}
    load = os.getloadavg()[0]
    for name in ("classifier", "rules"):
        wall, cpu = timings(routers[name].route, reqs, args.repeat)
        for clock, t in (("wall", wall * 1e6), ("cpu", cpu * 1e6)):
            p50, p90, p99 = np.percentile(t, [50, 90, 99])
            result[name, clock] = p99
            print(f"{name:<12}{clock:<6}{p50:>10.0f}{p90:>10.0f}{p99:>10.0f}{t.max():>10.0f}{t.mean():>10.0f}")
    for clock in ("wall", "cpu"):
        p99 = result["classifier", clock]
        print(f"classifier p99 ({clock}) {'<' if p99 < 1000 else '>='} 1 ms ({p99 / 1000:.3f} ms)")
    print(f"artifact {work.stat().st_size / 1e6:.1f} MB; load average {load:.2f} on {os.cpu_count()} cores "
          "(wall times on a busy machine include other processes' turns)")


if __name__ == "__main__":
    main()
