"""Runs a route: call the provider, retry and fall back on upstream errors, gate, escalate."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gearshift.config import Config
from gearshift.errors import Unavailable, UpstreamError
from gearshift.gateway.breaker import OPEN, Breakers
from gearshift.providers.base import Completion, Provider, Stream, Usage
from gearshift.request import ROUTING_KEYS, ChatRequest, metadata_keys_read
from gearshift.route import Route, Step, Walk
from gearshift.trace import Call, Trace

log = logging.getLogger("gearshift.executor")

BACKOFF_BASE = 0.05  # seconds; doubled each retry, with jitter
BACKOFF_CAP = 2.0


class LatencyTracker:
    """Recent observed latencies per model or gate, for latency budgets."""

    def __init__(self, window: int = 200) -> None:
        self._seen: dict[str, deque[float]] = {}
        self.window = window

    def observe(self, key: str, ms: float) -> None:
        seen = self._seen.get(key)
        if seen is None:  # not setdefault: that builds a deque on every call
            seen = self._seen[key] = deque(maxlen=self.window)
        seen.append(ms)

    def expected(self, key: str, quantile: float = 0.5) -> float | None:
        """The quantile of recent latencies in ms, or None when nothing was observed."""
        seen = self._seen.get(key)
        if not seen:
            return None
        ordered = sorted(seen)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


@dataclass(slots=True)
class Answer:
    """What the executor produced for the client."""

    model: str
    completion: Completion | None = None
    stream: Stream | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> tuple[str, ...]:
        """Request parameters the answering model's adapter dropped or clamped (`drop_params`)."""
        if self.completion is not None:
            return self.completion.dropped
        return self.stream.dropped if self.stream is not None else ()


class Executor:
    """Executes routes against providers, recording every call in the trace."""

    def __init__(self, config: Config, providers: dict[str, Provider]) -> None:
        self.config = config
        self.providers = providers
        self.latency = LatencyTracker()
        self.breakers = Breakers(config)
        # Routing hints stay here: the keys any configured router or shadow policy reads are not forwarded.
        keys = ROUTING_KEYS | metadata_keys_read([r.model_dump() for r in config.routers.values()])
        for p in providers.values():
            p.routing_keys = frozenset(keys)

    def expected_latency(self, key: str, quantile: float = 0.5) -> float | None:
        """Services: the quantile of recent latencies of a model or `gate:<name>`, in ms."""
        return self.latency.expected(key, quantile)

    def cost(self, model: str, usage: Usage) -> float:
        return self.config.models[model].price.cost(usage.input_tokens, usage.output_tokens)

    def _record(self, trace: Trace, model: str, role: str, attempt: int, t0: float,
                usage: Usage | None = None, error: UpstreamError | None = None, response: str | None = None) -> Call:
        ms = (time.perf_counter() - t0) * 1000
        call = Call(model=model, role=role, attempt=attempt, latency_ms=ms, response=response,
                    started=time.time() - ms / 1000)
        if usage is not None:
            call.input_tokens, call.output_tokens = usage.input_tokens, usage.output_tokens
            call.usage_estimated = usage.estimated
            call.cost_usd = self.cost(model, usage)
        if error is not None:
            call.status, call.error = error.upstream_status or error.status, error.message
        else:
            self.latency.observe(model, ms)
        trace.calls.append(call)
        return call

    async def _attempts(self, step: Step, role: str, trace: Trace, opener: Any,
                        failed: tuple[UpstreamError, float] | None = None) -> tuple[str, Any, float, int]:
        """Try the step's model then its fallbacks, each with retries; return (model, result, t0, attempt).

        `failed` is the first attempt's error and start time when the caller made that attempt itself.
        A model whose circuit is open, or whose Retry-After has not passed, is skipped. A Retry-After
        is waited out when it fits the step's deadline (its first model's read timeout); otherwise
        the next model serves at once."""
        last: UpstreamError | None = None
        waits: list[tuple[float, int]] = []  # (seconds, status) of each model that asked us to wait
        breakers = self.breakers
        deadline = time.monotonic() + self.config.models[step.model].timeout.read
        models = (step.model, *step.fallbacks)
        for n, model in enumerate(models):
            if failed is None:
                wait, status = breakers.wait(model, time.monotonic())
                if wait:
                    waits.append((wait, status))
                    log.info("model %s skipped (%s for %.1fs)", model,
                             "rate limited" if status == 429 else "circuit open", wait)
                    continue
            provider = self.providers[model]
            retries = self.config.models[model].retries
            this_role = role if n == 0 else "fallback"
            attempt = 0
            while True:
                attempt += 1
                t0 = time.perf_counter()
                try:
                    if failed is not None:
                        error, t0 = failed
                        failed = None
                        raise error
                    result = await opener(provider)
                except UpstreamError as e:
                    self._record(trace, model, this_role, attempt, t0, error=e)
                    last = e
                    breakers.failure(model, e, time.monotonic())
                    if not e.retryable:
                        raise
                    delay = e.retry_after
                    now = time.monotonic()
                    circuit = breakers.sick.get(model)
                    if circuit is not None and circuit.state == OPEN:  # it just opened: no more calls to it
                        waits.append((max(delay or 0.0, circuit.open_until - now), 503))
                        break
                    if delay is not None and (attempt > retries or now + delay > deadline):
                        waits.append((delay, 429 if e.upstream_status == 429 else 503))
                        break  # waiting would pass the deadline: the next model, or a 429 with the wait
                    if attempt > retries:
                        break
                    if delay is None:
                        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + random.random())
                    await asyncio.sleep(delay)
                    continue
                if model in breakers.sick:
                    breakers.success(model)
                return model, result, t0, attempt
            if n < len(step.fallbacks):
                log.warning("model %s failed (%s); falling back to %s", model, last.message if last else "",
                            step.fallbacks[n])
        if len(waits) == len(models):  # every model asked for a wait: say how long, so a retry can succeed
            wait, status = min(waits)
            what = "rate limited" if status == 429 else "unavailable (circuit open)"
            raise Unavailable(f"every model of the route is {what} ({', '.join(models)}); retry after {wait:.1f}s",
                              status=status, retry_after=wait)
        assert last is not None
        raise _every_upstream_failed(last, trace)

    async def _answer(self, step: Step, role: str, request: ChatRequest, trace: Trace) -> tuple[str, Completion]:
        """One whole answer for a step (retries, fallbacks), recorded in the trace."""

        async def call(p: Provider) -> Completion:
            return await p.complete(request)

        # A healthy first model is called straight away (one dict lookup); retries, fallbacks and
        # breakers only when it is sick or fails.
        t0 = time.perf_counter()
        if step.model not in self.breakers.sick:
            try:
                model, completion, attempt = step.model, await self.providers[step.model].complete(request), 1
            except UpstreamError as e:
                model, completion, t0, attempt = await self._attempts(step, role, trace, call, failed=(e, t0))
        else:
            model, completion, t0, attempt = await self._attempts(step, role, trace, call)
        self._record(trace, model, role if model == step.model else "fallback", attempt, t0,
                     usage=completion.usage, response=completion.text)
        return model, completion

    async def call_model(self, model: str, body: dict[str, Any]) -> tuple[str, Call]:
        """One whole answer from `model` for a gate that calls a model (the judge), with the model's
        retries. The gate puts the returned Call in its verdict and the trace records it from there;
        failed attempts raise UpstreamError, which the gate turns into a failed verdict."""
        scratch = Trace(router="", requested_model=model)
        _, completion = await self._answer(Step(model), "judge", ChatRequest(body=body), scratch)
        return completion.text, scratch.calls[-1]

    async def complete(self, route: Route, request: ChatRequest, trace: Trace) -> Answer:
        """Run the route to one whole answer (cascade steps gated, escalating on failure)."""
        step = route.steps[0]
        if not step.gates:  # an ungated first step answers as it is: no walk to run
            model, completion = await self._answer(step, "primary", request, trace)
            return Answer(model=model, completion=completion)
        return await self._run(route, request, trace, stream=False)

    async def embed(self, route: Route, request: ChatRequest, trace: Trace) -> Answer:
        """Embeddings from the route's first step (its model, retries, fallbacks): vectors are not
        gated or escalated, so later steps and gates do not apply."""
        step = route.steps[0]

        async def call(p: Provider) -> Completion:
            return await p.embed(request)

        model, completion, t0, attempt = await self._attempts(step, "primary", trace, call)
        self._record(trace, model, "primary" if model == step.model else "fallback", attempt, t0,
                     usage=completion.usage)
        notes = ["embeddings: only the first step of the route runs"] if len(route.steps) > 1 or step.gates else []
        return Answer(model=model, completion=completion, notes=notes)

    async def open_stream(self, route: Route, request: ChatRequest, trace: Trace) -> Answer:
        """Open a stream for the route. Gated steps are answered whole first (buffered), then either
        accepted (replayed as chunks) or escalated; the first ungated step streams through. With
        accept="best" the last step is gated too, so it is buffered and the best-scored answer replayed."""
        return await self._run(route, request, trace, stream=True)

    async def _run(self, route: Route, request: ChatRequest, trace: Trace, stream: bool) -> Answer:
        walk = Walk(route)
        answers: list[tuple[str, Completion]] = []  # each gated step's answer, by step index
        while walk.gated:
            asked = _logprobs_request(walk.step, request, self.providers)
            model, completion = await self._answer(walk.step, walk.role, asked or request, trace)
            answers.append((model, completion))
            chosen = walk.judge(model, await self._gate(walk.step, request, completion, trace))
            if asked is not None:  # the gates have read them: the client gets the body it asked for
                _strip_logprobs(completion)
            if chosen is not None:
                return _whole(*answers[chosen], stream, walk.notes)
        return await self._ungated(walk.step, walk.role, request, trace, stream, walk.notes)

    async def _ungated(self, step: Step, role: str, request: ChatRequest, trace: Trace, stream: bool,
                       notes: list[str]) -> Answer:
        if not stream:
            model, completion = await self._answer(step, role, request, trace)
            return Answer(model=model, completion=completion, notes=notes)

        async def opener(p: Provider) -> Stream:
            s = p.stream(request)
            await s.start()
            return s

        model, opened, t0, attempt = await self._attempts(step, role, trace, opener)
        role = role if model == step.model else "fallback"
        return Answer(model=model, stream=_Timed(opened, t0, model, role, attempt), notes=notes)

    async def _gate(self, step: Step, request: ChatRequest, completion: Completion,
                    trace: Trace) -> list[tuple[str, bool, float]]:
        """Run a step's gates: (name, passed, score) each. Gate calls and verdicts go into the trace."""
        results = []
        for gate in step.gates:
            t0 = time.perf_counter()
            verdict = await gate.acheck(request, completion.text, completion.body)
            ms = (time.perf_counter() - t0) * 1000
            started = time.time() - ms / 1000
            self.latency.observe(f"gate:{gate.name}", ms)
            trace.calls.extend(verdict.calls)
            if not verdict.calls:
                trace.calls.append(Call(model=gate.name, role="gate", latency_ms=ms,
                                        status=200 if verdict.passed else 422, started=started))
            # When and how long it ran and what it cost: the gate's span (telemetry) reads them.
            trace.verdicts.append({"gate": gate.name, "model": step.model, "passed": verdict.passed,
                                   "score": verdict.score, "reasons": list(verdict.reasons), "started": started,
                                   "latency_ms": ms, "cost_usd": verdict.cost_usd})
            results.append((gate.name, verdict.passed, verdict.score))
        return results

    def finish_stream(self, outcome: Answer, trace: Trace, error: UpstreamError | None = None) -> None:
        """Record the streamed call once the stream ended (or broke)."""
        s = outcome.stream
        if isinstance(s, _Timed):
            if error is not None:
                self.breakers.failure(s.model, error, time.monotonic())
            self._record(trace, s.model, s.role, s.attempt, s.t0, usage=s.usage, error=error, response=s.text)


def _logprobs_request(step: Step, request: ChatRequest, providers: dict[str, Provider]) -> ChatRequest | None:
    """The request with `logprobs: true` when a gate of the step reads them and the client did not ask.

    Only when every model of the step can return them: an API without logprobs (Anthropic) refuses the
    parameter, and failing the request is worse than the gate failing (it escalates, error no_logprobs)."""
    if request.body.get("logprobs") is True or not any(getattr(g, "needs_logprobs", False) for g in step.gates):
        return None
    if not all(getattr(providers[m], "logprobs", False) for m in (step.model, *step.fallbacks)):
        return None
    return ChatRequest(body={**request.body, "logprobs": True}, metadata=request.metadata, client=request.client)


def _strip_logprobs(completion: Completion) -> None:
    """Remove the logprobs gearshift asked for; the upstream's bytes no longer match, so they go too."""
    for choice in completion.body.get("choices") or ():
        if isinstance(choice, dict) and choice.get("logprobs") is not None:
            choice["logprobs"] = None  # the shape OpenAI returns when logprobs were not asked for
    completion.raw = None


def _whole(model: str, completion: Completion, stream: bool, notes: list[str]) -> Answer:
    """An accepted whole answer: as it is, or replayed as chunks to a streaming client."""
    if stream:
        return Answer(model=model, stream=CompletionStream(completion), notes=notes)
    return Answer(model=model, completion=completion, notes=notes)


def _every_upstream_failed(last: UpstreamError, trace: Trace) -> UpstreamError:
    failed = [c for c in trace.calls if c.error]
    timeouts = all(c.status == 504 for c in failed)
    models = sorted({c.model for c in failed})
    status = 504 if timeouts else 502
    err = UpstreamError(f"every upstream failed ({', '.join(models)}); last error: {last.message}",
                        status=status, retryable=False, timeout=timeouts)
    err.code = "upstream_timeout" if timeouts else "upstream_failed"
    return err


class _Timed(Stream):
    """A provider stream with the bookkeeping the trace needs."""

    def __init__(self, inner: Stream, t0: float, model: str, role: str, attempt: int) -> None:
        self.inner, self.t0, self.model, self.role, self.attempt = inner, t0, model, role, attempt
        self.dropped = inner.dropped

    @property  # type: ignore[override]
    def usage(self) -> Usage:  # type: ignore[override]
        return self.inner.usage

    @property  # type: ignore[override]
    def text(self) -> str:  # type: ignore[override]
        return self.inner.text

    async def start(self) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.inner.__aiter__()

    async def aclose(self) -> None:
        await self.inner.aclose()


class CompletionStream(Stream):
    """A whole completion replayed as OpenAI chunks: how a gated (buffered) answer is streamed."""

    def __init__(self, completion: Completion) -> None:
        self.completion = completion
        self.usage = completion.usage
        self.text = completion.text
        self.dropped = completion.dropped

    async def start(self) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        body = self.completion.body
        base = {"id": body.get("id", "chatcmpl-gearshift"), "object": "chat.completion.chunk",
                "created": body.get("created", int(time.time())), "model": body.get("model", "")}
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{**tc, "index": j} for j, tc in enumerate(message["tool_calls"])]
        first: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        if choice.get("logprobs"):  # only there when the client asked for them
            first["logprobs"] = choice["logprobs"]
        yield {**base, "choices": [first]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason", "stop")}]}
