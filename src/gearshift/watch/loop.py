"""The in-server watch: every `watch.interval_seconds`, check the recent traces against the baseline.

The analysis modules (numpy) load when a WatchLoop is built, so a gateway with the watch off never
imports them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gearshift.config import Config, WatchConfig
from gearshift.errors import ConfigError
from gearshift.store.base import TraceStore
from gearshift.watch.alerts import Alerter
from gearshift.watch.findings import WatchReport
from gearshift.watch.prometheus import Counters

if TYPE_CHECKING:
    from gearshift.watch.drift import Baseline

log = logging.getLogger("gearshift.watch")


def alerts_name(wc: WatchConfig) -> str:
    """The name the watched router's alert state and episodes are kept under in the store."""
    return f"watch-alerts:{wc.router or '*'}"


def load_baseline(config: Config, path: str | None = None) -> Baseline | None:
    """The baseline file `path` (or watch.baseline), relative to the config's folder; None if unset."""
    from gearshift.watch.drift import Baseline

    path = path or config.watch.baseline
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        p = Path(config.base_dir) / p
    try:
        return Baseline.load(p)
    except OSError as e:
        raise ConfigError(f"watch.baseline: cannot read {p}: {e.strerror}; write one with "
                          f"`gearshift watch --save-baseline FILE`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"watch.baseline: {p} is not a valid baseline: {e}") from None


def store_baseline(store: TraceStore, config: Config) -> tuple[Baseline | None, bool]:
    """The baseline from the oldest `window_requests` traces in the store, and whether it is complete
    (that many traces exist). None when there are fewer than `min_requests`."""
    from gearshift.watch.drift import Baseline

    wc = config.watch
    rows = list(store.traces(router=wc.router, limit=wc.window_requests))
    if len(rows) < wc.min_requests:
        return None, False
    baseline = Baseline.from_traces(rows, config, source=f"oldest {len(rows)} traces in the store")
    return baseline, len(rows) >= wc.window_requests


def promotion_baseline(store: TraceStore, config: Config, version: int,
                       promoted_at: float) -> tuple[Baseline | None, int]:
    """The baseline from the first `window_requests` traces after a promotion (None until there are
    that many), and how many there are so far."""
    from gearshift.watch.drift import Baseline

    wc = config.watch
    rows = list(store.traces(since=promoted_at, router=wc.router, limit=wc.window_requests))
    if len(rows) < wc.window_requests:
        return None, len(rows)
    source = f"first {len(rows)} traces after version {version} of {wc.router} was promoted"
    return Baseline.from_traces(rows, config, source=source), len(rows)


class WatchLoop:
    """Runs `Watch.check` on the store's recent traces every interval; fires alerts; keeps the report.

    A promotion of the watched router's version changes what it does, so the old baseline no longer
    describes it: the loop then waits for `window_requests` traces after the promotion and makes them
    the baseline, reporting `new baseline pending (n/N)` until then. The alert episodes live in the
    store (`watch_state`), so whichever process holds the alert duty continues them."""

    def __init__(self, store: TraceStore, config: Config, counters: Counters | None = None,
                 baseline: Baseline | None = None, alerter: Alerter | None = None, clock: Any = time.time) -> None:
        self.store = store
        self.clock = clock  # "now" of the window (the lab's simulation runs its own clock)
        self.config = config
        self.wc = config.watch
        from gearshift.watch.drift import Watch

        self.counters = counters
        self.watch = Watch(config)
        self.baseline = baseline or load_baseline(config)  # a bad baseline file fails at start-up
        self._frozen = self.baseline is not None
        self.alerter = alerter or Alerter.from_config(self.wc)
        self.report: WatchReport | None = None
        self._task: asyncio.Task[Any] | None = None
        self._version: tuple[int, float] | None = None  # the watched router's active (version, promoted_at)
        self._seen = False  # whether the active version was read once (the one at start is no change)
        self._pending: tuple[int, float] | None = None  # a promotion whose baseline is not complete yet
        self.state_name = alerts_name(self.wc)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"  # who raised or cleared an episode

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gearshift-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.alerter.close()

    async def check_once(self) -> WatchReport | None:
        """One check now: read (in a thread), compare, alert. None while there is no baseline yet; a
        report without metrics and with a `status` while a new baseline is pending."""
        gathered = await asyncio.to_thread(self._gather)
        if gathered is None:
            return None
        if isinstance(gathered, WatchReport):
            self.report = gathered
            if self.counters is not None:
                self.counters.record_report(gathered, [])
            return gathered
        traces, baseline, leading, state = gathered
        report = self.watch.check(traces, baseline)
        fired = []
        if leading:
            # The episodes as the last duty holder left them (maybe another process, seconds ago).
            if state is not None:
                self.alerter.restore(state)
            before = self.alerter.state()
            fired = await self.alerter.process(report)
            after = self.alerter.state()
            if after != before:
                await asyncio.to_thread(self._save, before, after, report)
        # A process without the duty sends nothing, so it counts nothing; its state comes from the store
        # when it takes the duty over.
        self.report = report
        if self.counters is not None:
            self.counters.record_report(report, [m.name for m in fired])
        return report

    def _save(self, before: dict[str, Any], after: dict[str, Any], report: WatchReport) -> None:
        """Record the episodes that started and ended, then the state: a duty holder that dies between the
        two leaves its successor to announce the change again, and the store keeps one episode of it."""
        was, now = before["active"], after["active"]
        for name in now.keys() - was.keys():
            m = now[name]
            self.store.open_episode({"watch": self.state_name, "router": report.router, "metric": name,
                                     "rule": m["rule"], "value": m["value"], "baseline": m["baseline"],
                                     "bound": m["bound"], "message": m["message"],
                                     "started": m["since"] if m["since"] is not None else report.created,
                                     "raised_by": self.replica})
        for name in was.keys() - now.keys():
            value = next((m.value for m in report.metrics if m.name == name), None)
            self.store.close_episode(self.state_name, name, report.created, value, self.replica)
        self.store.save_watch_state(self.state_name, after)

    def _promotion(self) -> None:
        """Notice a new active version of the watched router; it starts a new baseline."""
        if self.wc.router is None:
            return
        v = self.store.active_version(self.wc.router)
        now = None if v is None else (int(v["version"]), float(v.get("promoted_at") or 0.0))
        seen, self._seen = self._seen, True
        if now == self._version:
            return
        self._version = now
        if now is None or (seen is False and self._frozen):
            return  # a baseline given at start describes the version running then
        self._pending, self.baseline, self._frozen = now, None, False
        log.warning("watch: %s version %d promoted; the old baseline no longer applies, a new one "
                    "forms from the next %d traces", self.wc.router, now[0], self.wc.window_requests)

    def _gather(self) -> tuple[list[dict[str, Any]], Baseline, bool, dict[str, Any] | None] | WatchReport | None:
        from gearshift.watch.windows import recent_traces

        self._promotion()
        if self._pending is not None:
            version, at = self._pending
            self.baseline, n = promotion_baseline(self.store, self.config, version, at)
            if self.baseline is None:
                status = f"new baseline pending ({n}/{self.wc.window_requests})"
                return WatchReport(metrics=[], window_n=n, window_start=at, window_end=None,
                                   baseline_source=f"version {version} promoted at {at:.0f}", baseline_n=n,
                                   router=self.wc.router, status=status)
            self._pending, self._frozen = None, True
            log.warning("watch: new baseline for %s: %s", self.wc.router, self.baseline.source)
        if not self._frozen:
            self.baseline, self._frozen = store_baseline(self.store, self.config)
        if self.baseline is None:
            return None
        now = self.clock()
        traces = recent_traces(self.store, self.wc.window_requests, self.wc.window_seconds, self.wc.router, now=now)
        leading = self.store.leads("watch-alerts")
        state = self.store.watch_state(self.state_name) if leading else None
        return traces, self.baseline, leading, state

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watch check failed; next try in %.0f s", self.wc.interval_seconds)
            await asyncio.sleep(self.wc.interval_seconds)
