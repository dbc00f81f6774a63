"""Shadow routing: after the client has its answer, a sample of requests also goes to the reference
model in the background; the pair is scored and stored in the trace. Never delays or alters the
client's response: a full queue or a spent daily budget drops the shadow work, counted.

A daily budget is kept in the store as reservations: before calling the reference, a worker reserves
the estimated cost of the pair (reference answer and judging) in one atomic step shared by every
replica, and settles it with the real cost after. Replicas spending at once thus cannot each spend
the whole budget before they hear of each other; the day ends at most one pair's cost over."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from gearshift import telemetry
from gearshift.config import Config
from gearshift.errors import UpstreamError
from gearshift.gateway.compare import (
    PAIRWISE_PROMPT,
    RESOLVE_PROMPT,
    compare,
    parse_resolution,
    recorded_grades,
)
from gearshift.plan import ShadowPolicy, shadow_policies
from gearshift.providers.base import Provider
from gearshift.request import ChatRequest
from gearshift.store.view import AGREEMENT_METHODS, SHADOW_GRADE, SHADOW_RESOLUTION
from gearshift.store.writer import Writer
from gearshift.trace import Call, Trace

log = logging.getLogger("gearshift.shadow")


def _today(now: float | None = None) -> str:
    return (dt.datetime.now(dt.UTC) if now is None else dt.datetime.fromtimestamp(now, dt.UTC)).date().isoformat()


# Built and checked by the plan (gearshift.plan), so `check-config` refuses what serving would.
_Policy = ShadowPolicy


def policies(config: Config) -> dict[str, ShadowPolicy]:
    """Shadow policies of every router that has one; raises ConfigError for a judge below the reference."""
    return shadow_policies(config)


class Shadower:
    """Samples requests, queues shadow work, runs it on a few worker tasks and stores the scored pair."""

    def __init__(self, config: Config, providers: dict[str, Provider], writer: Writer,
                 counters: Any = None, clock: Any = time.time,
                 observing: Callable[[str], bool] = lambda router: False) -> None:
        self.config = config
        self.observing = observing  # whether a router observes now (its policy's observe_rate applies)
        self.counters = counters  # gearshift.watch.Counters: shadow calls and verdicts for /metrics
        self.providers = providers
        self.writer = writer
        self.policies = policies(config)
        # Each item ends with the request's span context when tracing is on (the shadow's span hangs under it).
        self.queue: asyncio.Queue[tuple[_Policy, ChatRequest, Trace, str, dict[str, Any] | None, Any]] = \
            asyncio.Queue(config.server.shadow_queue_size)
        self.dropped: Counter[str] = Counter()
        self.done = 0
        # USD spent on shadow calls and their judging on one UTC day, by router (each has its own budget).
        self.clock = clock  # what "today" is for the daily budgets (the lab's simulation runs its own clock)
        self.day = self._today()
        self.spent: dict[str, float] = {}
        self.spent_total = 0.0  # USD on shadow calls and judging since start, every day and router
        self._workers: list[asyncio.Task[None]] = []
        self.rng = random.Random()
        # The lab's simulation of an imperfect judge: a `recorded` pair's score agrees with the recorded
        # truth at this rate (else it is flipped). None: scored as recorded.
        self.judge_agreement: float | None = None

    def _today(self) -> str:
        return _today(self.clock())

    def reconfigure(self, config: Config, providers: dict[str, Provider]) -> None:
        """Shadow by a reloaded config from now on; work already queued, and today's spend, are kept."""
        self.config, self.providers, self.policies = config, providers, policies(config)
        if self.policies and not self._workers:
            self.start()

    @property
    def budgeted(self) -> bool:
        """Whether any router's shadowing has a daily budget."""
        return any(p.budget is not None for p in self.policies.values())

    def start(self) -> None:
        if self.policies:
            self._workers = [asyncio.create_task(self._work()) for _ in range(self.config.server.shadow_workers)]
            shared = self.writer.store.shared or self.config.server.workers > 1
            if shared and self.budgeted:
                self._workers.append(asyncio.create_task(self._sync_loop()))

    def policy_for(self, trace: Trace) -> _Policy | None:
        return self._policy_of(trace.router, trace.arm)

    def _policy_of(self, router: str, arm: str | None) -> _Policy | None:
        # A split router's arm carries the shadow policy when the split itself has none.
        return self.policies.get(router) or (self.policies.get(arm) if arm else None)

    def offer(self, request: ChatRequest, trace: Trace, answer: str, answer_body: dict[str, Any] | None) -> bool:
        """Maybe shadow this answered request. O(1); never waits."""
        policy = self.policy_for(trace)
        if policy is None or trace.status != 200 or not trace.final_model:
            return False
        if trace.final_model == policy.reference and not policy.explore:
            return False  # the answer already is the reference's: nothing to compare
        if self.rng.random() >= policy.rate_for(policy.observe_rate is not None and self.observing(policy.router)):
            return False
        if policy.condition is not None and not policy.condition.matches(request):
            return False
        if policy.budget is not None and self.spent_today(policy.router) >= policy.budget:
            self.dropped["budget"] += 1
            return False
        try:
            self.queue.put_nowait((policy, request, trace, answer, answer_body,
                                   None if telemetry.tracer is None else telemetry.parent()))
        except asyncio.QueueFull:
            self.dropped["queue_full"] += 1
            return False
        trace.shadowed = True
        return True

    def spent_today(self, router: str | None = None) -> float:
        """USD spent on shadowing today (UTC), by one router's policy or by all."""
        if self.day != self._today():
            self.day, self.spent = self._today(), {}
        return self.spent.get(router, 0.0) if router is not None else sum(self.spent.values())

    def sync_spend(self) -> None:
        """Take in today's shadow spend recorded in the store: at start (a restart must not reset the
        daily budgets) and, with a shared store, every few seconds (other replicas spend too)."""
        start = dt.datetime.combine(dt.date.fromisoformat(self._today()), dt.time(), dt.UTC).timestamp()
        stored: dict[str, float] = {}
        for router, arm, usd in self.writer.store.shadow_spend(start):
            policy = self._policy_of(router, arm)
            if policy is not None:
                stored[policy.router] = stored.get(policy.router, 0.0) + usd
        self.spent_today()  # rolls the day over
        # The store has every replica's flushed spend, this process also its unflushed spend: the
        # larger of the two is the better count.
        for key, usd in stored.items():
            self.spent[key] = max(self.spent.get(key, 0.0), usd)
        # (Reservations in the store, not this count, hold the budget: see `_reserve`.)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.server.shadow_spend_sync_seconds)
            try:
                await asyncio.to_thread(self.sync_spend)
            except Exception as e:  # the store may be briefly unreachable; the next sync catches up
                log.warning("shadow spend sync failed: %s", e)

    def _spend(self, policy: _Policy, usd: float) -> None:
        self.spent_today()  # rolls the day over
        self.spent[policy.router] = self.spent.get(policy.router, 0.0) + usd
        self.spent_total += usd

    async def _work(self) -> None:
        while True:
            policy, request, trace, answer, answer_body, under = await self.queue.get()
            span = None if under is None else telemetry.open_shadow(under, trace, policy.reference)
            done = None
            try:
                done = await self._shadow(policy, request, trace, answer, answer_body)
            except Exception:  # shadow work must never take a worker down
                log.exception("shadow of trace %s failed", trace.id)
            finally:
                self.queue.task_done()
                if span is not None:
                    telemetry.close_shadow(span, trace, done, self.config.models)

    async def _call(self, policy: _Policy, model: str, request: ChatRequest, role: str) -> tuple[Call, Any]:
        provider = self.providers[model]
        t0 = time.perf_counter()
        call = Call(model=model, role=role, started=time.time())
        completion = None
        try:
            completion = await provider.complete(request)
        except UpstreamError as e:
            call.status, call.error = e.upstream_status or e.status, e.message
        call.latency_ms = (time.perf_counter() - t0) * 1000
        if completion is not None:
            u = completion.usage
            call.input_tokens, call.output_tokens, call.usage_estimated = u.input_tokens, u.output_tokens, u.estimated
            call.cost_usd = self.config.models[model].price.cost(u.input_tokens, u.output_tokens)
            call.response = completion.text
            self._spend(policy, call.cost_usd)
        return call, completion

    def estimate(self, policy: _Policy, request: ChatRequest, trace: Trace, target: str) -> float:
        """USD to reserve for the shadow pair: a bound on its cost, settled with the real cost after.

        The target's answer as `max_tokens` when the request caps it, else four times the served one
        (at least 1,024 tokens), and a judge reading the question and both answers. A reservation
        below the real cost would let replicas in flight together overshoot the budget by the sum of
        their shortfalls; one above it only delays later shadows until it is settled."""
        served = next((c.output_tokens for c in reversed(trace.calls) if c.output_tokens), 0)
        cap = request.body.get("max_tokens") or request.body.get("max_completion_tokens")
        out = int(cap) if isinstance(cap, int) and cap > 0 else max(4 * served, 1024)
        tokens = request.estimated_tokens()
        usd = self.config.models[target].price.cost(tokens, out)
        if policy.judge:
            usd += self.config.models[policy.judge].price.cost(tokens + 2 * out + 200, 10)
        if policy.resolve:  # a bound, not an expectation: this pair may be a resolved disagreement
            usd += self.config.models[policy.resolve].price.cost(tokens + 2 * out + 200, 20)
        return usd

    async def _reserve(self, policy: _Policy, request: ChatRequest, trace: Trace, target: str) -> int | None:
        assert policy.budget is not None
        usd = self.estimate(policy, request, trace, target)
        day = self._today()
        return await asyncio.to_thread(self.writer.store.reserve_shadow, policy.router, day, usd, policy.budget)

    async def _shadow(self, policy: _Policy, request: ChatRequest, trace: Trace, answer: str,
                      answer_body: dict[str, Any] | None) -> Trace | None:
        """Shadow one request: the trace with its pair, as queued for the store (None when dropped)."""
        if policy.budget is not None and self.spent_today(policy.router) >= policy.budget:
            self.dropped["budget"] += 1
            return None
        body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
        shadow_req = ChatRequest(body=body, metadata=request.metadata, client=request.client, native=request.native,
                                 api=request.api)  # a Claude reference gets a Messages client's own body too
        # Exploring: the client got the reference's answer; the cheaper model's answer is the one judged.
        exploring = trace.final_model == policy.reference
        target = policy.explore if exploring else policy.reference
        assert target is not None
        reservation = None
        if policy.budget is not None:
            reservation = await self._reserve(policy, request, trace, target)
            if reservation is None:  # other replicas (or this one) already reserved the day's budget
                self.dropped["budget"] += 1
                return None
        call, completion = await self._call(policy, target, shadow_req, "shadow")
        # A copy: the original trace object may still be serialised by the writer thread.
        t = copy.copy(trace)
        t.revision = trace.revision + 1
        t.calls = [*trace.calls, call]
        t.verdicts = list(trace.verdicts)
        t.shadowed = True
        if completion is not None:
            candidate, candidate_body, candidate_model = answer, answer_body, trace.final_model
            reference, reference_body = completion.text, completion.body
            if exploring:
                candidate, candidate_body, candidate_model = completion.text, completion.body, target
                reference, reference_body = answer, answer_body
            verdict = None if policy.method == "judge" else compare(
                request, candidate, reference, candidate_body, reference_body, policy.method)
            grades = None
            if verdict is not None and verdict["method"] == "recorded":
                if self.judge_agreement is not None:  # a pairwise judge: the reference taken as right
                    verdict = self._noisy(verdict, self.judge_agreement)
                else:
                    grades = recorded_grades(candidate_body, reference_body)
            if verdict is None and policy.judge:
                verdict, judge_call = await self._judge(policy, request, candidate, reference)
                t.calls.append(judge_call)
            resolution = None
            if (verdict is not None and policy.resolve and not verdict["passed"]
                    and verdict["method"] in AGREEMENT_METHODS and self.rng.random() < policy.resolve_rate):
                # Disagreement is not loss: a random sample of disagreements is graded answer by answer,
                # so the resolved ones stand for all of them (store.view.PairEstimate).
                resolution, resolve_call = await self._resolve(policy, request, candidate, reference)
                t.calls.append(resolve_call)
            if verdict is not None:
                t.verdicts.append({"gate": "shadow_agreement", "model": candidate_model, **verdict})
                # The reference is taken as correct: its quality in the pair is 1 by definition...
                t.verdicts.append({"gate": "shadow_reference", "model": policy.reference, "passed": True,
                                   "score": 1.0, "method": "reference", "reasons": []})
            if resolution is not None:
                # ...unless a judge resolved the disagreement: then each answer has its own grade (these
                # verdicts come last, so they are the models' grades in the trace).
                for model, grade in zip((candidate_model, policy.reference), resolution, strict=True):
                    t.verdicts.append({"gate": SHADOW_RESOLUTION, "model": model, "passed": grade >= 0.5,
                                       "score": grade, "method": "judge", "rate": policy.resolve_rate,
                                       "reasons": []})
            if grades is not None:
                # Recorded qualities grade each answer on its own, as a perfect grader would: the reference is
                # not right by definition, so a cheap answer right where it was wrong counts as a gain, and a
                # prompt both got wrong as no quality at all (the lab's figures and the simulation's goal count so).
                for model, grade in zip((candidate_model, policy.reference), grades, strict=True):
                    t.verdicts.append({"gate": SHADOW_GRADE, "model": model, "passed": grade >= 0.5, "score": grade,
                                       "method": "recorded", "reasons": []})
        if reservation is not None:
            # The real cost replaces the estimate (a failure before here leaves the estimate: safe side).
            real = sum(c.cost_usd for c in t.calls[len(trace.calls):])
            await asyncio.to_thread(self.writer.store.settle_shadow, reservation, real)
        self.done += 1
        if self.counters is not None:
            self.counters.observe_shadow(t.calls[len(trace.calls):], t.verdicts[len(trace.verdicts):], t.router)
        t.cap_answers(self.config.store.max_answer_chars)  # the new calls' answers (the others are cut)
        self.writer.put(t)
        return t

    def _noisy(self, verdict: dict[str, Any], agreement: float) -> dict[str, Any]:
        """A judge that agrees with the recorded verdict at rate `agreement` and says the opposite otherwise."""
        if self.rng.random() < agreement:
            return verdict
        score = 1.0 - float(verdict["score"])
        return {**verdict, "passed": score >= 1.0, "score": score, "reasons": ["simulated judge disagreed"]}

    async def _judge(self, policy: _Policy, request: ChatRequest, answer: str, reference: str) -> tuple[dict[str, Any] | None, Call]:
        from gearshift.gates.judge import parse_pass_fail, question_text

        prompt = PAIRWISE_PROMPT.format(question=question_text(request), reference=reference, answer=answer)
        judge_req = ChatRequest(body={"messages": [{"role": "user", "content": prompt}], "temperature": 0,
                                      "max_tokens": 10})
        assert policy.judge is not None
        call, completion = await self._call(policy, policy.judge, judge_req, "shadow_judge")
        if completion is None:
            return None, call
        score = parse_pass_fail(completion.text)
        if score is None:
            return {"method": "judge", "passed": False, "score": 0.0, "reasons": ["unparseable judgement"],
                    "error": "unparseable"}, call
        return {"method": "judge", "passed": score >= 0.5, "score": score, "reasons": []}, call

    async def _resolve(self, policy: _Policy, request: ChatRequest, answer: str,
                       reference: str) -> tuple[tuple[float, float] | None, Call]:
        from gearshift.gates.judge import question_text

        # Which answer is the reference's is not said: the judge grades each on its own.
        prompt = RESOLVE_PROMPT.format(question=question_text(request), answer=answer, reference=reference)
        req = ChatRequest(body={"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 20})
        assert policy.resolve is not None
        call, completion = await self._call(policy, policy.resolve, req, "shadow_resolve")
        if completion is None:
            return None, call
        grades = parse_resolution(completion.text)
        if grades is None:  # the pair stays an unresolved disagreement
            log.warning("resolution by %s unparseable: %.80r", policy.resolve, completion.text)
        return grades, call

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Finish queued shadow work for a few seconds, then drop what is left (counted)."""
        if not self._workers:
            return
        try:
            await asyncio.wait_for(self.queue.join(), drain_seconds)
        except TimeoutError:
            self.dropped["shutdown"] += self.queue.qsize()
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
