"""Drift alerts: a WARNING log line and an optional webhook POST, once per episode of drift.

A metric alerts when it drifts, stays quiet while it stays drifted, sends a `resolved` notice when a
later check finds it within bounds, and alerts again if it drifts again. A check that cannot judge a
metric (too little data) leaves its state as it was. The episode state (which metrics drift, since
when, when last sent) round-trips through `state()`/`restore()`, so the loop can keep it in the store
and a new duty holder continues an episode instead of announcing it again. The webhook URL is never logged: such URLs often
carry a token.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Any

import aiohttp

from gearshift.config import WatchConfig
from gearshift.watch.findings import DRIFT, OK, Metric, WatchReport

log = logging.getLogger("gearshift.watch")


class Alerter:
    """Turns successive reports into alert and recovery events, logged and posted to a webhook."""

    def __init__(self, webhook_url: str | None = None, timeout: float = 5.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.webhook_url = webhook_url
        self.timeout = timeout
        self._session = session
        self._own_session = False
        self.active: dict[str, Metric] = {}  # metric name -> the metric when it started drifting
        self.since: dict[str, float] = {}  # metric name -> when its episode started
        self.last_sent: float | None = None
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_config(cls, wc: WatchConfig, session: aiohttp.ClientSession | None = None) -> Alerter:
        url = wc.webhook_url or (os.environ.get(wc.webhook_url_env) if wc.webhook_url_env else None)
        return cls(url or None, wc.webhook_timeout_seconds, session)

    def update(self, report: WatchReport) -> tuple[list[Metric], list[Metric]]:
        """Advance the state with a report: (newly drifted, newly recovered) metrics."""
        fired, resolved = [], []
        for m in report.metrics:
            if m.status == DRIFT and m.name not in self.active:
                self.active[m.name] = m
                self.since[m.name] = report.created
                fired.append(m)
            elif m.status == OK and m.name in self.active:
                del self.active[m.name]
                self.since.pop(m.name, None)
                resolved.append(m)
        return fired, resolved

    def state(self) -> dict[str, Any]:
        """The episode state as JSON-able data."""
        return {"active": {k: {**asdict(m), "since": self.since.get(k)} for k, m in self.active.items()},
                "last_sent": self.last_sent}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the episodes a `state()` describes (another process's, or an earlier one's)."""
        self.active, self.since = {}, {}
        for name, d in (state.get("active") or {}).items():
            since = d.pop("since", None)
            self.active[name] = Metric(**d)
            if since is not None:
                self.since[name] = float(since)
        self.last_sent = state.get("last_sent")

    async def process(self, report: WatchReport) -> list[Metric]:
        """Log and post the report's new alerts and recoveries; return the metrics that alerted."""
        fired, resolved = self.update(report)
        for m in fired:
            log.warning("watch drift: %s", m.message)
        for m in resolved:
            log.info("watch recovered: %s", m.message)
        if fired or resolved:
            self.last_sent = time.time()
        if self.webhook_url and (fired or resolved):
            await self.post(payload(report, fired, resolved))
        return fired

    async def post(self, body: dict[str, Any]) -> bool:
        """POST a JSON body to the webhook; failures are logged, never raised."""
        assert self.webhook_url is not None
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        try:
            async with self._session.post(self.webhook_url, json=body,
                                          timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                await resp.read()
                if resp.status >= 300:
                    self.failed += 1
                    log.warning("watch webhook answered HTTP %d; alert not delivered", resp.status)
                    return False
        except (aiohttp.ClientError, TimeoutError) as e:
            self.failed += 1
            log.warning("watch webhook failed (%s); alert not delivered", type(e).__name__)
            return False
        self.sent += 1
        return True

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None


def payload(report: WatchReport, fired: list[Metric], resolved: list[Metric]) -> dict[str, Any]:
    """The webhook body. `text` makes it readable as is by chat webhooks (Slack, Mattermost)."""
    # `status` is the event (as in Alertmanager): firing means the metric drifted, resolved that it is back.
    events = ([{**asdict(m), "status": "firing"} for m in fired]
              + [{**asdict(m), "status": "resolved"} for m in resolved])
    lines = [f"[gearshift watch] DRIFT {m.message}" for m in fired]
    lines += [f"[gearshift watch] recovered {m.message}" for m in resolved]
    return {"source": "gearshift.watch", "created": time.time(), "router": report.router,
            "window": {"n": report.window_n, "start": report.window_start, "end": report.window_end},
            "baseline": {"source": report.baseline_source, "n": report.baseline_n},
            "alerts": events, "text": "\n".join(lines)}
