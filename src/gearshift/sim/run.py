"""`gearshift lab simulate`: stream a recorded outcomes table, shuffled, through the gateway's own code
in-process (replay providers, the configured routers, shadow sampling with its budget, the version loop's
proofs, retraining, recalibration, promotion and demotion, the watch), on a simulated clock, once per seed.

Each request is routed and answered by `Gateway.route`/`answer`, offered to the real Shadower and
recorded by the real TraceWriter into a fresh SQLite store; at each period of the simulated clock the
shadow queue and the writer are drained and `VersionLoop.tick` runs (then the watch's check), exactly
what the server's loops do every few seconds. Pairs are scored from the recorded quality
(`compare: recorded`), optionally by a simulated judge that agrees with it at rate p. The always-strong
counterfactual of every request is the strong replay model's answer to it, priced like a served one.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gearshift import plan
from gearshift.config import Config
from gearshift.gateway.app import Gateway
from gearshift.outcomes.table import Outcomes
from gearshift.providers.recorded import ReplayProvider
from gearshift.request import ChatRequest
from gearshift.routers.base import ScoringRouter
from gearshift.trace import Trace

log = logging.getLogger("gearshift.sim")

SERIES_POINTS = 200  # time-series points kept per run in the JSON and the plot


class Clock:
    """The simulated time (epoch seconds) the gateway's schedules, traces and budget days read."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Event:
    """A change in the router's life: promoted (serves its own decisions), demoted, retrained."""

    kind: str
    request: int  # index in the stream of the first request after it
    hours: float  # simulated hours since the start
    pairs: int  # scored shadow pairs so far
    shadow_usd: float  # shadow spend so far
    reason: str = ""


@dataclass
class Run:
    """One seed's stream: per request, what was served and what always-strong would have been."""

    seed: int
    hours: np.ndarray  # simulated hours of each request
    serving: np.ndarray  # serving cost (USD) of each request
    strong: np.ndarray  # the always-strong cost of each request
    quality: np.ndarray  # recorded quality of the answer served
    strong_quality: np.ndarray  # recorded quality of the strong model's answer
    own: np.ndarray  # whether the router served its own decision (not observing)
    strong_served: np.ndarray  # whether the strong model answered
    shadow: np.ndarray  # cumulative shadow spend after each request
    pairs: np.ndarray  # cumulative scored shadow pairs after each request
    events: list[Event] = field(default_factory=list)
    alerts: list[tuple[float, list[str]]] = field(default_factory=list)  # (hours, the watch's drift alerts)
    checks: list[int] = field(default_factory=list)  # scored pairs so far at each proof check while observing

    @property
    def promotions(self) -> list[Event]:
        return [e for e in self.events if e.kind == "promoted"]

    def quality_share(self, start: int = 0, end: int | None = None) -> float:
        """Quality served as a share of always-strong's, over requests `start` to `end` (default: the end)."""
        q = float(self.strong_quality[start:end].sum())
        return float(self.quality[start:end].sum()) / q if q else float("nan")

    def savings(self, start: int = 0, end: int | None = None) -> float:
        """Serving cost saved against always-strong, over requests `start` to `end` (default: the end)."""
        c = float(self.strong[start:end].sum())
        return 1.0 - float(self.serving[start:end].sum()) / c if c else float("nan")

    def covered(self, floor: float) -> bool:
        """Served quality after the first promotion stayed at or above `floor` (true when none happened)."""
        first = self.promotions[0] if self.promotions else None
        return first is None or self.quality_share(first.request) >= floor - 1e-12

    def summary(self, floor: float) -> dict[str, Any]:
        first = self.promotions[0] if self.promotions else None
        strong, serving, shadow = float(self.strong.sum()), float(self.serving.sum()), float(self.shadow[-1])
        return {
            "seed": self.seed, "requests": len(self.serving), "hours": float(self.hours[-1]),
            "always_strong_usd": strong, "serving_usd": serving, "shadow_usd": shadow,
            "strong_share": float(self.strong_served.mean()), "savings": self.savings(), "net_savings": 1.0 - (serving + shadow) / strong if strong else None,
            "quality_share": self.quality_share(), "covered": self.covered(floor),
            "first_promotion": None if first is None else {
                **asdict(first), "quality_share_after": self.quality_share(first.request),
                "savings_after": self.savings(first.request)},
            "events": [{**asdict(e), "quality_share_after": self.quality_share(e.request)} for e in self.events],
            "watch_alerts": [{"hours": h, "alerts": a} for h, a in self.alerts], "proof_checks": self.checks,
        }

    def series(self) -> dict[str, Any]:
        """Cumulative figures at up to SERIES_POINTS requests, for the JSON and the plot."""
        idx = np.unique(np.linspace(0, len(self.serving) - 1, SERIES_POINTS).astype(int))
        strong = np.cumsum(self.strong)[idx]
        return {"seed": self.seed, "request": idx.tolist(), "hours": self.hours[idx].tolist(),
                "serving_share": (np.cumsum(self.serving)[idx] / strong).tolist(),
                "shadow_share": (self.shadow[idx] / strong).tolist(),
                "quality_share": (np.cumsum(self.quality)[idx] / np.cumsum(self.strong_quality)[idx]).tolist(),
                "events": [{"kind": e.kind, "hours": e.hours} for e in self.events]}


@dataclass
class Simulation:
    """Every seed's run of one stream and router, and the figures over seeds."""

    stream: str
    router: str
    weak: str
    strong: str
    floor: float
    judge_agreement: float | None
    per_hour: float
    runs: list[Run]

    @property
    def coverage(self) -> float:
        """Floor coverage: the share of runs whose served quality after the first promotion kept the floor."""
        return float(np.mean([r.covered(self.floor) for r in self.runs]))

    def promoted(self) -> list[Run]:
        return [r for r in self.runs if r.promotions]

    def summary(self) -> dict[str, Any]:
        promoted = self.promoted()
        firsts = [r.promotions[0] for r in promoted]

        def median(values: Sequence[float]) -> float | None:
            return float(np.median(values)) if len(values) else None

        return {
            "stream": self.stream, "router": self.router, "weak": self.weak, "strong": self.strong,
            "floor": self.floor, "judge_agreement": self.judge_agreement, "requests_per_hour": self.per_hour,
            "seeds": len(self.runs), "floor_coverage": self.coverage, "promoted_runs": len(promoted),
            "demotions": sum(e.kind == "demoted" for r in self.runs for e in r.events),
            "median_pairs_to_promotion": median([e.pairs for e in firsts]),
            "median_shadow_usd_to_promotion": median([e.shadow_usd for e in firsts]),
            "median_hours_to_promotion": median([e.hours for e in firsts]),
            "median_savings_after_promotion": median([r.savings(r.promotions[0].request) for r in promoted]),
            "median_quality_share_after_promotion": median([r.quality_share(r.promotions[0].request)
                                                            for r in promoted]),
            "median_savings": median([r.savings() for r in self.runs]),
            "median_quality_share": median([r.quality_share() for r in self.runs]),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "runs": [r.summary(self.floor) for r in self.runs],
                "series": [r.series() for r in self.runs]}

    def write(self, json_path: str | Path | None = None, plot_path: str | Path | None = None) -> list[Path]:
        """Write the JSON and the plot (PNG, through the lab report's figures); the paths written."""
        out = []
        if json_path is not None:
            p = Path(json_path)
            p.write_text(json.dumps(_finite(self.to_json()), indent=1))
            out.append(p)
        if plot_path is not None:
            from gearshift.lab.plots import plot_lifecycle, png

            title = (f"{self.router} on {self.stream}: {len(self.runs)} seeds, floor {self.floor:.0%}, "
                     f"coverage {self.coverage:.0%}")
            p = Path(plot_path)
            p.write_bytes(png(plot_lifecycle([r.series() for r in self.runs], self.floor, title)))
            out.append(p)
        return out


def _finite(x: Any) -> Any:
    """JSON without NaN or infinity (null in their place)."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def observed_router(config: Config) -> str:
    """The config's one router that starts in `observe` (the policy whose life is simulated)."""
    names = [n for n, rc in config.routers.items() if rc.options().get("mode") == "observe"]
    if len(names) != 1:
        raise ValueError(f"name the router to simulate (--router): routers in observe mode: {names or 'none'}")
    return names[0]


def stream_of(outcomes: Outcomes, columns: Sequence[str]) -> Outcomes:
    """The rows every one of `columns` answered (graded), each prompt once: what replay can serve."""
    cols = [outcomes.index(c) for c in columns]
    graded = ~np.isnan(np.asarray(outcomes.quality[:, cols], float)).any(axis=1)
    seen: set[str] = set()
    rows = []
    for i in np.flatnonzero(graded):
        key = str(outcomes.prompts[i]).strip()
        if key not in seen:  # replay answers a repeated prompt with its first recording
            seen.add(key)
            rows.append(i)
    return outcomes.subset(np.array(rows, dtype=int))


def _seed_config(raw: Mapping[str, Any], name: str, base_dir: Path, folder: Path) -> dict[str, Any]:
    """The config of one run: its own store in `folder`, open, and the router's artifact copied there
    (retraining writes new artifacts beside it)."""
    r = copy.deepcopy(dict(raw))
    r.pop("client_keys", None)
    r["server"] = {**(r.get("server") or {}), "open": True, "shadow_queue_size": 100_000}
    r["store"] = {"url": f"sqlite:///{folder / 'sim.db'}", "flush_interval": 0.005, "spill_path": None}
    if r.get("watch"):  # the watch's alerts are recorded in the run, never sent
        r["watch"] = {**r["watch"], "webhook_url": None, "webhook_url_env": None}
    rc = dict(r["routers"][name])
    if "artifact" in rc:
        src = Path(rc["artifact"]).expanduser()
        src = src if src.is_absolute() else base_dir / src
        dst = folder / "router.json"
        shutil.copyfile(src, dst)
        rc["artifact"] = str(dst)
    r["routers"] = {**r["routers"], name: rc}
    return r


async def _drained(gw: Gateway) -> None:
    """Every queued shadow pair scored and every trace in the store."""
    assert gw.shadower is not None
    await gw.shadower.queue.join()
    while gw.writer.pending():
        await asyncio.sleep(0.002)


async def _run(config: Config, name: str, stream: Outcomes, order: np.ndarray, seed: int,
               judge_agreement: float | None, per_hour: float, period_hours: float, start: float) -> Run:
    clock = Clock(start)
    gw = Gateway(config, clock=clock)
    await gw.start(background=False)  # the version loop and the watch run below, on the simulated clock
    try:
        assert gw.executor is not None and gw.shadower is not None and gw.versions is not None
        for p in gw.executor.providers.values():
            if isinstance(p, ReplayProvider):
                p.use(stream)
        shadower = gw.shadower
        shadower.rng = random.Random(seed)
        shadower.judge_agreement = judge_agreement
        router = gw.routers[name]
        assert isinstance(router, ScoringRouter)
        strong = gw.executor.providers[router.strong]
        n = len(order)
        run = Run(seed, np.arange(n) / per_hour, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n),
                  np.zeros(n, bool), np.zeros(n, bool), np.zeros(n), np.zeros(n, int))
        prompts = [str(p) for p in stream.prompts]
        period = period_hours * 3600.0
        next_tick = start + period
        for k, row in enumerate(order):
            clock.now = start + run.hours[k] * 3600.0
            if clock.now >= next_tick:
                next_tick += period
                await _tick(gw, router, run, k)
            req = ChatRequest.from_prompt(prompts[row], model=name)
            trace = Trace(router="", requested_model="", created=clock.now)
            route = gw.route(req, trace)
            answer = await gw.answer(req, route, trace)
            gw.offer_shadow(req, trace, answer)
            gw.record(trace)
            assert answer.completion is not None
            run.serving[k] = trace.cost_usd
            run.quality[k] = answer.completion.body["gearshift_replay"]["quality"]
            run.own[k] = router.mode == "serve"
            run.strong_served[k] = answer.model == router.strong
            counterfactual = await strong.complete(req)
            run.strong[k] = gw.executor.cost(router.strong, counterfactual.usage)
            run.strong_quality[k] = counterfactual.body["gearshift_replay"]["quality"]
            await asyncio.sleep(0)  # shadow workers run between requests, as in the server
            run.shadow[k], run.pairs[k] = shadower.spent_total, shadower.done
        await _drained(gw)
        run.shadow[-1], run.pairs[-1] = shadower.spent_total, shadower.done
        return run
    finally:
        await gw.stop()


async def _tick(gw: Gateway, router: ScoringRouter[Any], run: Run, k: int) -> None:
    """One round of the server's loops: drain shadow work and traces, tick the versions, check the watch."""
    assert gw.versions is not None and gw.shadower is not None
    await _drained(gw)
    mode, retrainings, looks = router.mode, gw.versions.retrainings, gw.versions.checks.get(router.name, 0)
    await gw.versions.tick()
    if gw.versions.checks.get(router.name, 0) > looks:
        run.checks.append(gw.shadower.done)
    at = dict(request=k, hours=float(run.hours[k]), pairs=gw.shadower.done, shadow_usd=gw.shadower.spent_total,
              reason=router.state_reason)
    if gw.versions.retrainings > retrainings:
        run.events.append(Event("retrained", **at))  # type: ignore[arg-type]
    if mode != router.mode:
        run.events.append(Event("promoted" if router.mode == "serve" else "demoted", **at))  # type: ignore[arg-type]
    if gw.watch is not None:
        report = await gw.watch.check_once()
        if report is not None and report.alerts:
            run.alerts.append((float(run.hours[k]), report.alerts))


def priced(raw: Mapping[str, Any], outcomes: Outcomes, *, base_dir: str | Path = ".",
           router: str | None = None) -> Outcomes:
    """The stream the simulation serves (see `stream_of`) as outcomes of the router's two config models,
    each answer priced as the gateway prices it (configured prices, tokens estimated from the text): what
    the lab's curves need to speak of the same dollars as the simulation."""
    from gearshift.providers.recorded import ReplayProvider

    config = plan.parse(dict(raw), base_dir=Path(base_dir).resolve(), serving=False)
    name = router or observed_router(config.config)
    built = config.routers[name]
    assert isinstance(built, ScoringRouter)
    models = [built.weak, built.strong]
    mcs = [config.config.models[m] for m in models]
    stream = stream_of(outcomes, [mc.replay.column for mc in mcs if mc.replay is not None])
    quality, cost = np.zeros((len(stream), 2)), np.zeros((len(stream), 2))

    async def answer_all() -> None:
        for j, mc in enumerate(mcs):
            provider = ReplayProvider.from_outcomes(mc, stream)
            for i, prompt in enumerate(stream.prompts):
                c = await provider.complete(ChatRequest.from_prompt(str(prompt)))
                quality[i, j] = c.body["gearshift_replay"]["quality"]
                cost[i, j] = mc.price.cost(c.usage.input_tokens, c.usage.output_tokens)

    asyncio.run(answer_all())
    return Outcomes(prompts=stream.prompts, models=models, quality=quality, cost=cost, meta=dict(stream.meta),
                    name=stream.name, cost_estimated=True)


def simulate(raw: Mapping[str, Any], outcomes: Outcomes, *, base_dir: str | Path = ".", router: str | None = None,
             seeds: Sequence[int] = tuple(range(20)), judge_agreement: float | None = None, per_hour: float = 100.0,
             floor: float | None = None, stream_name: str | None = None, limit: int | None = None,
             progress: Callable[[str], None] | None = None) -> Simulation:
    """Simulate the life of `router` (default: the config's one observing router) over `outcomes`, once
    per seed (each its own shuffled order, shadow sampling and store). `raw` is the parsed config: its
    replay models' columns are read from `outcomes`; `floor` (default the router's proof floor) is the
    one floor coverage is measured against; the clock's period is the router's `proof.every_hours`;
    `limit`: each seed serves only the first `limit` requests of its shuffled order."""
    base = Path(base_dir).resolve()
    config = plan.parse(dict(raw), base_dir=base, serving=False)
    name = router or observed_router(config.config)
    built = config.routers.get(name)
    if not isinstance(built, ScoringRouter):
        raise ValueError(f"router {name!r} is not a two-model scoring router (classifier, random)")
    columns = {}
    for m in (built.weak, built.strong):
        mc = config.config.models[m]
        if mc.replay is None:
            raise ValueError(f"model {m!r} must be a `replay` model to be simulated")
        columns[m] = mc.replay.column
    stream = stream_of(outcomes, list(columns.values()))
    if len(stream) == 0:
        raise ValueError("no prompt of the outcomes was answered by both models")
    say = progress or (lambda _m: None)
    start = float(int(time.time()) // 86400 * 86400)  # midnight UTC today: simulated days start there
    runs = []
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(stream))[:limit]
        with tempfile.TemporaryDirectory(prefix="gearshift-sim-") as tmp:
            cfg = plan.parse(_seed_config(raw, name, base, Path(tmp)), base_dir=base, serving=False).config
            run = asyncio.run(_run(cfg, name, stream, order, seed, judge_agreement, per_hour,
                                   built.proof.every_hours, start))
        runs.append(run)
        first = run.promotions[0] if run.promotions else None
        say(f"seed {seed}: " + (f"promoted after {first.pairs} pairs (request {first.request}), quality share "
                                f"after {run.quality_share(first.request):.3f}" if first else "never promoted"))
    return Simulation(stream_name or outcomes.name, name, built.weak, built.strong,
                      floor if floor is not None else built.proof.floor, judge_agreement, per_hour, runs)


__all__ = ["Clock", "Event", "Run", "Simulation", "observed_router", "priced", "simulate", "stream_of"]
