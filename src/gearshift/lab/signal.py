"""Is there a signal? APGR with its bootstrap interval on pairs training did not see, against random.

The expected random router's APGR is 0.5 by definition (its PGR rises linearly with the strong-call
share). A router whose APGR interval reaches 0.5 cannot be told apart from random on this traffic:
it saves nothing a coin would not, so nothing may promote it automatically. One check, used by
`lab train`, `lab retrain`, `lab recalibrate` and `lab calibrate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gearshift.lab.bootstrap import Estimate
from gearshift.outcomes.table import Outcomes

RANDOM_APGR = 0.5


@dataclass(frozen=True)
class Signal:
    """APGR (with its interval) on `pairs` held-out pairs; `has_signal` when the interval excludes random."""

    apgr: Estimate
    pairs: int

    @property
    def has_signal(self) -> bool:
        # NaN (no quality gap between the models, so no PGR at all) is no signal either.
        return bool(self.apgr.low > RANDOM_APGR)

    def figures(self) -> str:
        """E.g. 'APGR 0.612 [0.561, 0.660] on 300 held-out pairs (random 0.5)'."""
        return f"APGR {self.apgr} on {self.pairs} held-out pairs (random {RANDOM_APGR})"

    def line(self) -> str:
        """The one plain line said when there is no signal ('' when there is one)."""
        if self.has_signal:
            return ""
        a = self.apgr
        if self.pairs == 0:
            return "no signal: no held-out pairs to measure APGR on; this router should not serve this traffic"
        return (f"no signal: APGR {a.value:.2f} [{a.low:.2f}, {a.high:.2f}] on {self.pairs} held-out pairs includes "
                f"random ({RANDOM_APGR}); this router should not serve this traffic")

    def to_json(self) -> dict[str, Any]:
        a = self.apgr
        return {"apgr": a.value, "low": a.low, "high": a.high, "pairs": self.pairs, "has_signal": self.has_signal}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Signal:
        return cls(Estimate(float(d["apgr"]), float(d["low"]), float(d["high"])), int(d["pairs"]))


def signal(scores: np.ndarray, outcomes: Outcomes, weak: str, strong: str, n_boot: int = 200, seed: int = 0,
           alpha: float = 0.05) -> Signal:
    """The signal of a router's scores on held-out `outcomes` (pairs of weak and strong answers)."""
    from gearshift.lab import metrics
    from gearshift.lab.bootstrap import bootstrap_curve

    if len(outcomes) == 0:
        return Signal(Estimate(math.nan, math.nan, math.nan, alpha), 0)
    est = bootstrap_curve(np.asarray(scores, float), outcomes, weak, strong, {"apgr": metrics.apgr}, n=n_boot,
                          seed=seed, alpha=alpha)
    return Signal(est["apgr"], len(outcomes))


__all__ = ["RANDOM_APGR", "Signal", "signal"]
