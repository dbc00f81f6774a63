"""The watch: recent traces against the baseline the router was calibrated on; drift alerts; metrics.

- `Baseline` (drift.py): from a reference window of traces or a JSON file the lab writes.
- `Watch.check(traces, baseline) -> WatchReport` (drift.py): every metric with its bound and verdict.
- `Alerter` (alerts.py): log line and webhook, once per episode of drift.
- `Counters`, `render_metrics` (metrics.py): Prometheus text for GET /metrics.
- `WatchLoop` (loop.py): the periodic check inside the gateway.
"""

from gearshift.watch.alerts import Alerter
from gearshift.watch.drift import Baseline, Histogram, Metric, Watch, WatchReport, psi
from gearshift.watch.loop import WatchLoop, load_baseline
from gearshift.watch.metrics import CONTENT_TYPE, Counters, render_metrics
from gearshift.watch.windows import WindowStats, compute_stats, recent_traces, wilson

__all__ = ["CONTENT_TYPE", "Alerter", "Baseline", "Counters", "Histogram", "Metric", "Watch", "WatchLoop",
           "WatchReport", "WindowStats", "compute_stats", "load_baseline", "psi", "recent_traces",
           "render_metrics", "wilson"]
