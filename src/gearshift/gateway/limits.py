"""Rate limits (requests and tokens per minute) and USD budgets (per UTC day and month) of keys and teams.

One entry point before routing (`Limiter.admit`: refuse with 429, or admit with the x-ratelimit-*
headers and the budget share used, which routers' `on_budget` act on) and one after the answer
(`Limiter.settle`: the tokens reserved on the estimate are corrected, the real cost is counted).

Counters live in the store, one row per (scope, name, dim, period), shared by every replica. Each
process decides on its last view of the store's totals plus its own additions since, and exchanges
both with the store every `server.limits_sync_seconds` (one write transaction that adds, never
overwrites). So the decision costs no store round trip, and the overshoot is bounded: with N
replicas, a window admits at most its limit plus what the other N-1 replicas admit between two syncs
(each at most the limit, usually rate x sync interval); a budget additionally runs over by the cost
of requests in flight when it is reached (cost is counted when known, at the answer)."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gearshift.errors import LimitExceeded
from gearshift.principal import Allowance, Principal
from gearshift.request import ChatRequest
from gearshift.store.base import LimitKey, TraceStore
from gearshift.trace import SHADOW_ROLES, Trace

log = logging.getLogger("gearshift.limits")

# Output tokens reserved for a request that does not cap its answer (settled with the real count after).
DEFAULT_OUTPUT_TOKENS = 256
# A process syncs before its next tick once its unsynced count on a counter reaches this share of what
# was left at the last sync (at most once per EARLY_SYNC_GAP seconds): replicas in a burst then learn
# of each other within a few store round trips instead of a whole sync interval.
EARLY_SYNC_SHARE = 0.1
EARLY_SYNC_GAP = 0.05
COST_WEIGHT = 0.2  # of the latest request in a key's mean cost (reserved before each call)
RATES = ("rpm", "tpm")
BUDGETS = ("usd_day", "usd_month")
WINDOW_WORD = {"rpm": "requests per minute", "tpm": "tokens per minute", "usd_day": "day (UTC)",
               "usd_month": "month (UTC)"}


def window(dim: str, now: float) -> tuple[str, float]:
    """The period a counter of `dim` is in at `now` (its id in the store) and when it ends (unix s)."""
    if dim in RATES:
        start = math.floor(now / 60) * 60
        return str(int(start)), start + 60.0
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if dim == "usd_day":
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return day.isoformat(), end.timestamp()
    days = calendar.monthrange(day.year, day.month)[1]
    end = dt.datetime.combine(day.replace(day=1) + dt.timedelta(days=days), dt.time(), dt.UTC)
    return f"{day.year:04d}-{day.month:02d}", end.timestamp()


def reset_text(seconds: float) -> str:
    """A wait as OpenAI writes it in x-ratelimit-reset-*: `20ms`, `1s`, `6m0s`, `2h3m0s`."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    s = math.ceil(seconds)
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s" if m else f"{s}s"


def estimated_tokens(req: ChatRequest) -> int:
    """Tokens to reserve before the call: the prompt's estimate and the answer's cap (or a default)."""
    cap = req.body.get("max_tokens") or req.body.get("max_completion_tokens") or req.body.get("max_output_tokens")
    out = int(cap) if isinstance(cap, int) and cap > 0 else DEFAULT_OUTPUT_TOKENS
    return req.estimated_tokens() + out


@dataclass(slots=True)
class Admission:
    """An admitted request: what it reserved, its x-ratelimit-* headers, and the budget share used."""

    tokens: list[tuple[LimitKey, float]] = field(default_factory=list)  # tpm counters and the estimate reserved
    spend: list[LimitKey] = field(default_factory=list)  # usd counters its cost counts to
    headers: dict[str, str] = field(default_factory=dict)
    budget_used: float = 0.0  # the highest share used of the key's and team's day and month budgets
    budget_of: str = ""  # whose, e.g. "key app, day"
    cost: float = 0.0  # USD reserved on each budget counter, replaced by the real cost at settle
    settled: bool = False


class Limiter:
    """Every key's and team's counters in this process, synced with the store."""

    def __init__(self, store: TraceStore, clock: Callable[[], float] = time.time, sync_seconds: float = 1.0,
                 counters: Any = None) -> None:
        self.store = store
        self.clock = clock
        self.sync_seconds = sync_seconds
        self.counters = counters  # gearshift.watch.Counters: refusals for /metrics
        self._lock = threading.Lock()  # admit/settle on the event loop, sync in a thread
        self._syncing = threading.Lock()
        self._stored: dict[LimitKey, float] = {}  # the store's totals at the last sync
        self._pending: dict[LimitKey, float] = {}  # this process's additions not yet in the store
        self._ends: dict[LimitKey, float] = {}  # counters read at each sync, and when their period ends
        self._scopes: dict[tuple[str, str], Allowance] = {}  # keys and teams whose current counters each sync reads
        self._windows: dict[str, tuple[float, str, float]] = {}  # dim -> (start, period, end), the current one
        self._cost: dict[str, float] = {}  # key name -> its requests' recent mean cost: reserved before a call
        self._due: asyncio.Event | None = None  # set when a counter moved enough to sync before the next tick
        self._task: asyncio.Task[None] | None = None

    def _used(self, key: LimitKey) -> float:
        return self._stored.get(key, 0.0) + self._pending.get(key, 0.0)

    def _key(self, scope: str, name: str, dim: str, now: float) -> tuple[LimitKey, float]:
        w = self._windows.get(dim)
        if w is None or not w[0] <= now < w[2]:  # a new minute, day or month (or a clock set back)
            period, end = window(dim, now)
            w = self._windows[dim] = (now if dim in BUDGETS else end - 60.0, period, end)
        _, period, end = w
        key = (scope, name, dim, period)
        self._ends[key] = end
        return key, end

    @staticmethod
    def scopes(principal: Principal | None) -> list[tuple[str, str, Allowance]]:
        """The limited scopes a request counts to: its key's and its team's (unlimited ones left out)."""
        if principal is None:
            return []
        out = [("key", principal.name, principal.allowance)]
        if principal.team:
            out.append(("team", principal.team, principal.team_allowance))
        return [s for s in out if not s[2].unlimited]

    def admit(self, principal: Principal | None, req: ChatRequest) -> Admission | None:
        """Admit the request (reserving a request and its estimated tokens), or raise LimitExceeded;
        None for a key without limits."""
        scopes = self.scopes(principal)
        if not scopes:
            return None
        now = self.clock()
        estimate = estimated_tokens(req)
        adm = Admission()
        with self._lock:
            for scope, name, a in scopes:
                self._scopes[(scope, name)] = a
            for scope, name, a in scopes:  # a spent budget refuses first, whatever the minute
                for dim in BUDGETS:
                    limit = getattr(a, dim)
                    if limit is None:
                        continue
                    key, end = self._key(scope, name, dim, now)
                    used = self._used(key)
                    share = used / limit if limit > 0 else math.inf
                    if share >= 1:
                        self._refuse(scopes, now, scope, name, dim, end, "budget_exceeded",
                                     f"{scope} {name!r} spent ${used:.6g} of its ${limit:.6g} budget per "
                                     f"{WINDOW_WORD[dim]}")
                    adm.spend.append(key)
                    if self._pending.get(key, 0.0) > EARLY_SYNC_SHARE * (limit - self._stored.get(key, 0.0)):
                        self._wake()
                    if share > adm.budget_used:
                        adm.budget_used, adm.budget_of = share, f"{scope} {name}, {dim.removeprefix('usd_')}"
            reserve: list[tuple[LimitKey, float]] = []
            for scope, name, a in scopes:
                for dim, amount in (("rpm", 1.0), ("tpm", float(estimate))):
                    limit = getattr(a, dim)
                    if limit is None:
                        continue
                    key, end = self._key(scope, name, dim, now)
                    used = self._used(key)
                    if used + amount > limit:
                        what = "requests" if dim == "rpm" else "tokens"
                        need = "" if dim == "rpm" else f", this request needs {estimate}"
                        self._refuse(scopes, now, scope, name, dim, end, "rate_limit_exceeded",
                                     f"{scope} {name!r} reached its limit of {limit} {what} per minute "
                                     f"({used:.0f} used{need})")
                    reserve.append((key, amount))
                    if self._pending.get(key, 0.0) + amount > EARLY_SYNC_SHARE * (limit - self._stored.get(key, 0.0)):
                        self._wake()
            for key, amount in reserve:
                self._pending[key] = self._pending.get(key, 0.0) + amount
                if key[2] == "tpm":
                    adm.tokens.append((key, amount))
            # Cost is known after the answer; meanwhile the key's recent mean is reserved, so requests in
            # flight together count against the budget before they finish.
            assert principal is not None  # it has limited scopes
            adm.cost = self._cost.get(principal.name, 0.0) if adm.spend else 0.0
            for key in adm.spend:
                self._pending[key] = self._pending.get(key, 0.0) + adm.cost
            adm.headers = self._headers(scopes, now)
        return adm

    def _wake(self) -> None:
        if self._due is not None:
            self._due.set()

    def _refuse(self, scopes: list[tuple[str, str, Allowance]], now: float, scope: str, name: str, dim: str,
                end: float, code: str, what: str) -> None:
        wait = max(0.0, end - now)
        if self.counters is not None:
            self.counters.limit(scope, dim)
        raise LimitExceeded(f"{what}; it resets in {reset_text(wait)}", code=code, retry_after=wait, scope=scope,
                            reason=dim, headers_extra=self._headers(scopes, now))

    def _headers(self, scopes: list[tuple[str, str, Allowance]], now: float) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers: per dimension, the scope (key or team) with the least left."""
        out: dict[str, str] = {}
        for dim, word in (("rpm", "requests"), ("tpm", "tokens")):
            tightest: tuple[float, int, float] | None = None
            for scope, name, a in scopes:
                limit = getattr(a, dim)
                if limit is None:
                    continue
                key, end = self._key(scope, name, dim, now)
                left = max(0.0, limit - self._used(key))
                if tightest is None or left < tightest[0]:
                    tightest = (left, limit, end - now)
            if tightest is not None:
                left, limit, wait = tightest
                out[f"x-ratelimit-limit-{word}"] = str(limit)
                out[f"x-ratelimit-remaining-{word}"] = str(int(left))
                out[f"x-ratelimit-reset-{word}"] = reset_text(wait)
        return out

    def settle(self, adm: Admission | None, trace: Trace) -> None:
        """Count the answered request's real tokens (replacing the estimate) and cost (calls made for the
        client: serving, escalation, judges; not shadow)."""
        if adm is None or adm.settled:
            return
        adm.settled = True
        tokens = sum(c.input_tokens + c.output_tokens for c in trace.calls if c.role not in SHADOW_ROLES)
        usd = trace.cost_usd  # the trace's own definition of what serving cost
        with self._lock:
            for key, reserved in adm.tokens:
                self._pending[key] = self._pending.get(key, 0.0) + tokens - reserved
            for key in adm.spend:
                self._pending[key] = self._pending.get(key, 0.0) + usd - adm.cost
            if adm.spend and trace.client is not None and trace.status == 200:
                mean = self._cost.get(trace.client)
                self._cost[trace.client] = usd if mean is None else mean + COST_WEIGHT * (usd - mean)

    def watch(self, principals: Iterable[Principal]) -> None:
        """Read these keys' and teams' counters at every sync, before their first request here (so spend
        before a restart, and other replicas' counts, are known from the start)."""
        with self._lock:
            for p in principals:
                for scope, name, a in self.scopes(p):
                    self._scopes[(scope, name)] = a

    def sync(self) -> None:
        """Add this process's counts to the store's and take in every process's totals."""
        # One sync at a time: two taking the same unsynced counts would add them to the store twice.
        with self._syncing:
            self._sync()

    def _sync(self) -> None:
        now = self.clock()
        with self._lock:
            for key in [k for k, end in self._ends.items() if end <= now]:
                del self._ends[key]
                self._stored.pop(key, None)
            for (scope, name), a in self._scopes.items():  # the current periods of every known counter
                for dim in (*RATES, *BUDGETS):
                    if getattr(a, dim) is not None:
                        self._key(scope, name, dim, now)
            # A settlement after its period ended keeps its row as long as the period was.
            deltas = {k: (v, self._ends.get(k, now)) for k, v in self._pending.items() if v}
            read = list(self._ends)
        if not deltas and not read:
            return
        totals = self.store.add_limit_usage(deltas, read, now)
        with self._lock:
            for key, (flushed, _) in deltas.items():
                left = self._pending.get(key, 0.0) - flushed
                if abs(left) < 1e-12:
                    self._pending.pop(key, None)
                else:
                    self._pending[key] = left
            for key, total in totals.items():
                if key in self._ends:
                    self._stored[key] = total

    async def start(self, principals: Iterable[Principal] = ()) -> None:
        """Read the store's counts of these keys (spend before a restart still counts), then sync every
        `sync_seconds` in the background, and sooner when a counter moves fast."""
        self.watch(principals)
        try:
            await asyncio.to_thread(self.sync)
        except Exception as e:  # noqa: BLE001 - a store down at start: the loop syncs when it answers
            log.warning("limit counters not read at start: %s", e)
        self._due = asyncio.Event()
        self._task = asyncio.create_task(self._loop(self._due), name="gearshift-limits")

    async def _loop(self, due: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # the tick: no counter moved fast
                await asyncio.wait_for(due.wait(), self.sync_seconds)
            due.clear()
            try:
                await asyncio.to_thread(self.sync)
            except Exception as e:  # the store may be briefly unreachable: counts wait for the next sync
                log.warning("limit counters sync failed: %s", e)
            await asyncio.sleep(EARLY_SYNC_GAP)

    async def stop(self) -> None:
        """Stop syncing; this process's last counts go to the store."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await asyncio.to_thread(self.sync)
        except Exception as e:  # noqa: BLE001 - a store down at shutdown: these counts are lost
            log.warning("limit counters not saved at shutdown: %s", e)
