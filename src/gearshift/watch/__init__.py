"""The watch: recent traces against the baseline the router was calibrated on; drift alerts; metrics.

- `Baseline` (drift.py): from a reference window of traces or a JSON file the lab writes.
- `Watch.check(traces, baseline) -> WatchReport` (drift.py): every metric with its bound and verdict.
- `Alerter` (alerts.py): log line and webhook, once per episode of drift.
- `Counters`, `render_metrics` (prometheus.py): Prometheus text for GET /metrics.
- `Peers`, `combine` (peers.py): the counts of every worker process of one `serve --workers N`.
- `WatchLoop` (loop.py): the periodic check inside the gateway.

Names load on first use: the gateway imports `Counters` and `render_metrics` without numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Alerter": "alerts",
    "Baseline": "drift", "Histogram": "drift", "Watch": "drift", "psi": "drift",
    "Metric": "findings", "WatchReport": "findings",
    "WatchLoop": "loop", "load_baseline": "loop",
    "CONTENT_TYPE": "prometheus", "Counters": "prometheus", "render_metrics": "prometheus",
    "WindowStats": "windows", "compute_stats": "windows", "recent_traces": "windows", "wilson": "windows",
}
__all__ = ["CONTENT_TYPE", "Alerter", "Baseline", "Counters", "Histogram", "Metric", "Watch", "WatchLoop",
           "WatchReport", "WindowStats", "compute_stats", "load_baseline", "psi", "recent_traces",
           "render_metrics", "wilson"]

if TYPE_CHECKING:
    from gearshift.watch.alerts import Alerter
    from gearshift.watch.drift import Baseline, Histogram, Watch, psi
    from gearshift.watch.findings import Metric, WatchReport
    from gearshift.watch.loop import WatchLoop, load_baseline
    from gearshift.watch.prometheus import CONTENT_TYPE, Counters, render_metrics
    from gearshift.watch.windows import WindowStats, compute_stats, recent_traces, wilson


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gearshift.watch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gearshift.watch.{module}"), name)
    globals()[name] = value
    return value
