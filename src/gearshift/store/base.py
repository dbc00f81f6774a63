"""The trace store interface."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from gearshift.store.rollup import RangeSums
from gearshift.store.view import SHADOW_GATE, Totals, TraceView
from gearshift.trace import Trace


def redact_url(url: str) -> str:
    """A store URL fit for logs and errors: any password masked."""
    return re.sub(r"^([a-z]+://[^:/@]*):[^@]*@", r"\1:***@", url)


@dataclass
class ABRows:
    """Traces as the A/B comparison reads them, a column each: the gate verdicts' counts (the facts
    `verdicts_n` and `verdicts_passed`), and the verdicts of the few traces with a shadow agreement (by row)."""

    id: Sequence[str]
    router: Sequence[str]
    arm: Sequence[str | None]
    status: Sequence[int]
    cost_usd: Sequence[float]
    latency_ms: Sequence[float]
    verdicts_n: Sequence[int]
    verdicts_passed: Sequence[int]
    verdicts: dict[int, list[dict[str, Any]]]

    @classmethod
    def of(cls, traces: Iterable[Mapping[str, Any]]) -> ABRows:
        """The columns of full traces (their gate verdicts counted by TraceView, as the writer stores them)."""
        found = list(traces)
        views = [TraceView.of(t) for t in found]
        return cls([t["id"] for t in found], [t["router"] for t in found], [t.get("arm") for t in found],
                   [t["status"] for t in found], [t["cost_usd"] for t in found], [t["latency_ms"] for t in found],
                   [len(v.gate_verdicts) for v in views], [v.gates_passed for v in views],
                   {i: list(t["verdicts"]) for i, t in enumerate(found) if _agreement_in(t.get("verdicts"))})


def _agreement_in(verdicts: Any) -> bool:
    return bool(verdicts) and any(isinstance(v, Mapping) and v.get("gate") == SHADOW_GATE for v in verdicts)


# A rate-limit or budget counter: (scope: key | team, its name, dim: rpm | tpm | usd_day | usd_month, period).
LimitKey = tuple[str, str, str, str]


class TraceStore(ABC):
    """Durable traces. Writes come in batches from one writer thread; reads may come from anywhere."""

    # A store kind is one module here: its class sets `kind` (the URL scheme), `aliases` (other
    # schemes) and `url_form` (shown in errors), and opens itself in `open_url`.
    kind: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    url_form: ClassVar[str] = ""
    shared = False  # True when several gateway processes write to it (they then sync shadow budgets)

    @classmethod
    def url_ok(cls, url: str) -> bool:
        """Whether a URL of this scheme is well formed (kinds with a stricter form override it)."""
        return True

    @classmethod
    def open_url(cls, url: str, base_dir: str = ".", password: str | None = None) -> TraceStore:
        """Open the store a URL of this kind names."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a URL")

    def leads(self, duty: str) -> bool:
        """Whether this process does a once-for-all duty (alerts, scheduled recalibration, pruning)
        among every process sharing the store. The first to ask keeps it while it runs; when it
        stops, another process's next ask takes it over. A store with one process always leads."""
        return True

    @abstractmethod
    def write(self, traces: Sequence[Trace]) -> None:
        """Persist a batch atomically."""

    @abstractmethod
    def traces(self, since: float | None = None, router: str | None = None,
               limit: int | None = None, client: str | None = None,
               team: str | None = None) -> Iterator[dict[str, Any]]:
        """Traces as dicts (with a `calls` list), oldest first; `client` (the key's name) and `team` filter."""

    def views(self, since: float | None = None, router: str | None = None,
              limit: int | None = None) -> Iterator[TraceView]:
        """Traces as TraceView (what each one means), oldest first."""
        return map(TraceView.of, self.traces(since=since, router=router, limit=limit))

    def find_traces(self, since: float | None = None, until: float | None = None, router: str | None = None,
                    model: str | None = None, status: str | None = None, client: str | None = None,
                    escalated: bool | None = None, trace_id: str | None = None,
                    limit: int = 100, verdict: str | None = None) -> list[dict[str, Any]]:
        """Traces (with calls), newest first, matching every filter given: `model` the final model,
        `status` "ok", "error" or a code, `client` the key's name, `until` exclusive, `verdict` the
        gates' (TraceView.gate_verdict: pass, fail, none)."""
        raise NotImplementedError(f"{type(self).__name__} cannot filter traces")

    def totals(self, since: float, until: float | None = None, reference: str | None = None,
               bucket_seconds: float | None = None) -> list[tuple[int | None, Totals]]:
        """The Totals of the traces since a time (until one, exclusive), counted against `reference`:
        one (None, totals), or with `bucket_seconds` one per bucket (its index from `since`, in order)
        that has traces."""
        raise NotImplementedError(f"{type(self).__name__} cannot aggregate traces")

    def latencies(self, since: float, until: float | None = None) -> list[tuple[bool, bool, float]]:
        """(gated, escalated, latency ms) of the answered traces since a time that were gated or escalated."""
        raise NotImplementedError(f"{type(self).__name__} cannot aggregate traces")

    def call_spend(self, since: float, until: float | None = None) -> list[tuple[str, str, int, float]]:
        """(model, role, calls, USD) of the calls of the traces since a time."""
        raise NotImplementedError(f"{type(self).__name__} cannot aggregate traces")

    def range_sums(self, since: float, until: float, reference: str | None, bucket_seconds: float) -> RangeSums:
        """What the overview reads over [since, until): Totals per chart bucket, the tier-1 and escalated
        latencies, and the calls' spend. Here from the traces' facts (buckets from `since`, exact latencies);
        a store with hourly rollups reads whole hours from them."""
        buckets = [(since + b * bucket_seconds, part) for b, part in self.totals(since, until, reference, bucket_seconds)
                   if b is not None]
        tier1: list[float] = []
        escalated: list[float] = []
        for gated, esc, ms in self.latencies(since, until):
            if esc:
                escalated.append(ms)
            elif gated:
                tier1.append(ms)
        return RangeSums(buckets, tier1, escalated, self.call_spend(since, until))

    def ab_rows(self, since: float | None = None, router: str | None = None) -> ABRows:
        """What `lab.ab.ab_report` reads of the traces since a time (of one router), as columns: here from
        the full traces; a SQL store reads only those columns."""
        return ABRows.of(self.traces(since=since, router=router))

    def decision_mix(self, since: float, bucket_seconds: float) -> list[tuple[float, str, str | None, int]]:
        """(bucket start, router, final model, requests) since a time, in buckets of a width."""
        raise NotImplementedError(f"{type(self).__name__} cannot aggregate traces")

    def client_spend(self, since: float | None = None, by: str = "client") -> list[tuple[str | None, int, float, int]]:
        """(client key name, or team with `by="team"`; requests, serving USD, non-200 requests), most spent first."""
        raise NotImplementedError(f"{type(self).__name__} cannot aggregate traces")

    @abstractmethod
    def has_trace(self, trace_id: str) -> bool:
        """Whether a trace with this id is stored."""

    @abstractmethod
    def trace_client(self, trace_id: str) -> tuple[bool, str | None]:
        """(whether the trace is stored, the name of the client key that made its request)."""

    @abstractmethod
    def count(self) -> int:
        """How many traces are stored."""

    @abstractmethod
    def write_feedback(self, trace_id: str, score: float, label: str | None = None, source: str | None = None,
                       comment: str | None = None, client: str | None = None) -> None:
        """Record the application's judgement of a traced answer (score in [0, 1]), written by the key
        named `client`; it replaces any earlier feedback on that trace."""

    @abstractmethod
    def feedback(self, since: float | None = None) -> list[dict[str, Any]]:
        """Feedback rows, oldest first."""

    @abstractmethod
    def prune(self, before: float) -> int:
        """Delete traces created before a time, with their calls and feedback (and any older feedback);
        returns the number of traces deleted."""

    @abstractmethod
    def ping(self) -> bool:
        """Whether the store answers at all (a failed write is then the rows', not the store's)."""

    @abstractmethod
    def shadow_spend(self, since: float) -> list[tuple[str, str | None, float]]:
        """USD spent on shadow calls and their judging by traces since a time: (router, arm, usd) rows."""

    @abstractmethod
    def add_router_version(self, router: str, settings: dict[str, Any], metrics: dict[str, Any],
                           created_by: str) -> int:
        """Store a new version of a router's settings (e.g. a recalibrated threshold); returns its number."""

    @abstractmethod
    def router_versions(self, router: str | None = None) -> list[dict[str, Any]]:
        """Every stored version, oldest first, with who promoted it and when."""

    @abstractmethod
    def promote(self, router: str, version: int, by: str) -> None:
        """Make a version the active one; the gateway applies it."""

    def active_version(self, router: str) -> dict[str, Any] | None:
        """The promoted version of a router, if any."""
        active = [v for v in self.router_versions(router) if v["active"]]
        return active[-1] if active else None

    # Small shared state (new tables; a store without them keeps it in this process only).
    def watch_state(self, name: str) -> dict[str, Any] | None:
        """The watch's saved state under a name (e.g. the alert episodes of one watched router)."""
        return getattr(self, "_local_state", {}).get(name)

    def save_watch_state(self, name: str, state: dict[str, Any]) -> None:
        """Replace the watch's saved state under a name, for whichever process watches next."""
        self.__dict__.setdefault("_local_state", {})[name] = state

    def open_episode(self, episode: Mapping[str, Any]) -> bool:
        """Record that an alert started (`watch`, `metric`, `started`, `raised_by`; `router`, `rule`, `value`,
        `baseline`, `bound`, `message`), unless an episode of that metric is open already; whether it was added."""
        book: list[dict[str, Any]] = self.__dict__.setdefault("_episodes", [])
        if any(e["watch"] == episode["watch"] and e["metric"] == episode["metric"] and e.get("ended") is None
               for e in book):
            return False
        book.append({"router": None, "rule": None, "value": None, "baseline": None, "bound": None, "message": None,
                     "raised_by": None, **episode, "ended": None, "end_value": None, "cleared_by": None})
        return True

    def close_episode(self, watch: str, metric: str, ended: float, end_value: float | None, by: str) -> bool:
        """Record that an alert's open episode ended (when, the metric's value then, by whom); whether one was open."""
        for e in self.__dict__.get("_episodes", []):
            if e["watch"] == watch and e["metric"] == metric and e["ended"] is None:
                e.update(ended=ended, end_value=end_value, cleared_by=by)
                return True
        return False

    def watch_episodes(self, since: float | None = None, until: float | None = None,
                       watch: str | None = None) -> list[dict[str, Any]]:
        """Alert episodes that overlap [since, until) (open ones have `ended` None), oldest first."""
        return [dict(e) for e in sorted(self.__dict__.get("_episodes", []), key=lambda e: e["started"])
                if (watch is None or e["watch"] == watch) and (until is None or e["started"] < until)
                and (since is None or e["ended"] is None or e["ended"] >= since)]

    def reserve_shadow(self, router: str, day: str, usd: float, budget: float) -> int | None:
        """Reserve `usd` of a router's shadow budget for a UTC day if today's reservations leave some of
        `budget`, atomically among every process sharing the store (so the day ends at most one
        reservation over); the reservation's id, else None."""
        book: list[list[Any]] = self.__dict__.setdefault("_reserved", [])
        if self.shadow_reserved(router, day) >= budget:
            return None
        book.append([router, day, usd])
        return len(book) - 1

    def settle_shadow(self, reservation: int, usd: float) -> None:
        """Replace a reservation's estimate with what the shadow work really cost."""
        self.__dict__["_reserved"][reservation][2] = usd

    def shadow_reserved(self, router: str, day: str) -> float:
        """USD reserved (or settled) on a router's shadow budget for a UTC day."""
        return sum(u for r, d, u in self.__dict__.get("_reserved", []) if (r, d) == (router, day))

    def cache_get(self, key: str, now: float) -> str | None:
        """The shared response cache's entry under `key` (gateway/cache.py), None when absent or expired."""
        found = self.__dict__.get("_cache", {}).get(key)
        return found[1] if found is not None and found[0] > now else None

    def cache_put(self, key: str, router: str, value: str, now: float, expires: float, max_entries: int) -> None:
        """Store a response cache entry until `expires`; past `max_entries` of the router's, the oldest go."""
        book: dict[str, tuple[float, str, str]] = self.__dict__.setdefault("_cache", {})
        book.pop(key, None)
        book[key] = (expires, value, router)
        mine = [k for k, (_, _, r) in book.items() if r == router]
        for k in mine[:max(0, len(mine) - max_entries)]:
            del book[k]

    def add_limit_usage(self, deltas: Mapping[LimitKey, tuple[float, float]], read: Iterable[LimitKey],
                        now: float) -> dict[LimitKey, float]:
        """Add to each counter (delta, the end of its period) and return the totals of those and of `read`,
        atomically among every process sharing the store; counters of periods long over are deleted."""
        book: dict[LimitKey, float] = self.__dict__.setdefault("_limit_usage", {})
        for key, (delta, _) in deltas.items():
            book[key] = book.get(key, 0.0) + delta
        return {key: book.get(key, 0.0) for key in [*deltas, *read]}

    # Virtual keys: stored by name with the HMAC of the key (never the key), looked up by that HMAC.
    def add_key(self, record: dict[str, Any], key_hash: str) -> None:
        """Store a new key (its fields as `stored_keys()` lists them) under its HMAC; KeyError if the name is taken."""
        raise NotImplementedError(f"the {self.kind} store holds no virtual keys")

    def key_by_hash(self, key_hash: str) -> tuple[str, dict[str, Any]] | None:
        """(stored hash, key) of the key with this HMAC, revoked or not; None when there is none."""
        raise NotImplementedError(f"the {self.kind} store holds no virtual keys")

    def key(self, name: str) -> dict[str, Any] | None:
        """One key by name (without its hash)."""
        raise NotImplementedError(f"the {self.kind} store holds no virtual keys")

    def stored_keys(self) -> list[dict[str, Any]]:
        """Every key, revoked ones too, by name (without hashes)."""
        raise NotImplementedError(f"the {self.kind} store holds no virtual keys")

    def update_key(self, name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Replace some of a key's fields (rows.KEY_FIELDS); the key as it is now, None if there is none."""
        raise NotImplementedError(f"the {self.kind} store holds no virtual keys")

    def revoke_key(self, name: str, by: str) -> dict[str, Any] | None:
        """Mark a key revoked, by whom and when (once); the key as it is now, None if there is none."""
        raise NotImplementedError(f"the {self.kind} store holds no virtual keys")

    def close(self) -> None:  # noqa: B027 - stores without a connection need not override it
        """Release the connection."""
