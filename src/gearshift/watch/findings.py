"""A watch check's result: each metric's value, baseline, bound and verdict. No numpy here, so the
gateway can import the counters and the report without the analysis code."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

# Report statuses of one metric.
OK, DRIFT, INSUFFICIENT, NO_BASELINE, OFF = "ok", "drift", "insufficient data", "no baseline", "off"
# Verdicts the shadow code records (gateway/shadow.py): the judged answer's, and the reference's.
SHADOW_GATE = "shadow_agreement"
SHADOW_REFERENCE = "shadow_reference"


@dataclass(slots=True)
class Metric:
    """One watched figure: the window's value, the baseline's, the bound and the verdict."""

    name: str
    value: float | None
    baseline: float | None
    bound: float | None
    rule: str  # how the bound applies: "abs change", "drop", "rise", "ratio", "floor", "psi"
    status: str
    n: int
    message: str = ""
    lower: float | None = None
    upper: float | None = None

    @property
    def drifted(self) -> bool:
        return self.status == DRIFT


@dataclass(slots=True)
class WatchReport:
    """The result of one check: every metric, and the drifted ones as alert messages."""

    metrics: list[Metric]
    window_n: int
    window_start: float | None
    window_end: float | None
    baseline_source: str
    baseline_n: int
    router: str | None = None
    created: float = field(default_factory=time.time)
    spend: dict[str, float | None] = field(default_factory=dict)  # USD: window spend, counterfactual, shadow
    status: str = "checked"  # or "new baseline pending (n/N)" after a promotion (no metrics then)

    @property
    def drifted(self) -> list[Metric]:
        return [m for m in self.metrics if m.drifted]

    @property
    def alerts(self) -> list[str]:
        return [m.message for m in self.drifted]

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "router": self.router, "status": self.status,
                "window": {"n": self.window_n, "start": self.window_start, "end": self.window_end},
                "spend_usd": self.spend,
                "baseline": {"source": self.baseline_source, "n": self.baseline_n},
                "metrics": [{**asdict(m), "drifted": m.drifted} for m in self.metrics],
                "alerts": self.alerts}
