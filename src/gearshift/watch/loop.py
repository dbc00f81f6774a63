"""The in-server watch: every `watch.interval_seconds`, check the recent traces against the baseline.

The analysis modules (numpy) load when a WatchLoop is built, so a gateway with the watch off never
imports them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gearshift.config import Config
from gearshift.errors import ConfigError
from gearshift.store.base import TraceStore
from gearshift.watch.alerts import Alerter
from gearshift.watch.findings import WatchReport
from gearshift.watch.prometheus import Counters

if TYPE_CHECKING:
    from gearshift.watch.drift import Baseline

log = logging.getLogger("gearshift.watch")


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


class WatchLoop:
    """Runs `Watch.check` on the store's recent traces every interval; fires alerts; keeps the report."""

    def __init__(self, store: TraceStore, config: Config, counters: Counters | None = None,
                 baseline: Baseline | None = None, alerter: Alerter | None = None) -> None:
        self.store = store
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
        self._lookback = 3600.0

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
        """One check now: read (in a thread), compare, alert. None while there is no baseline yet."""
        gathered = await asyncio.to_thread(self._gather)
        if gathered is None:
            return None
        traces, baseline, leading = gathered
        report = self.watch.check(traces, baseline)
        if leading:
            fired = await self.alerter.process(report)
        else:
            # Another process sharing the store alerts; this one keeps the state, so that if it takes
            # over it does not alert again on a drift already announced.
            fired, _ = self.alerter.update(report)
        self.report = report
        if self.counters is not None:
            self.counters.record_report(report, [m.name for m in fired])
        return report

    def _gather(self) -> tuple[list[dict[str, Any]], Baseline, bool] | None:
        from gearshift.watch.windows import recent_traces

        if not self._frozen:
            self.baseline, self._frozen = store_baseline(self.store, self.config)
        if self.baseline is None:
            return None
        traces = recent_traces(self.store, self.wc.window_requests, self.wc.window_seconds, self.wc.router,
                               lookback=self._lookback)
        if traces and self.wc.window_seconds is None:
            # Start the next read near the span this window covered, so it usually takes one query.
            age = time.time() - traces[0]["created"]
            self._lookback = max(60.0, 1.5 * age + 2 * self.wc.interval_seconds)
        return traces, self.baseline, self.store.leads("watch-alerts")

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watch check failed; next try in %.0f s", self.wc.interval_seconds)
            await asyncio.sleep(self.wc.interval_seconds)
