"""The report's figures (matplotlib, drawn to memory): quality against cost, PGR against strong-call
share, savings at quality levels, and cascade latency."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gearshift.lab import metrics

if TYPE_CHECKING:
    from gearshift.lab.evaluate import Row
    from gearshift.lab.report import Report

_FIXED_STYLE = {"random": ("#7f7f7f", "-"), "oracle": ("#000000", ":")}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")


def _colors(report: Report) -> dict[str, str]:
    names = [r.name for r in report.rows if r.kind in ("scoring", "replay") and r.name not in _FIXED_STYLE]
    names += [p.name for p in report.points] + [c.label for c in report.cascades]
    out = {k: v[0] for k, v in _FIXED_STYLE.items()}
    for i, n in enumerate(dict.fromkeys(names)):
        out[n] = _PALETTE[i % len(_PALETTE)]
    return out


def _label(r: Row) -> str:
    """The legend entry of a row: random says its line is the expectation and its band the draws'."""
    if r.band is None:
        return r.name
    return f"random, expected (band: 5-95% of {r.band.draws} draws)"


def _per_1k(x: float | np.ndarray) -> Any:
    return np.asarray(x, float) * 1000


def plot_quality_cost(report: Report) -> Any:
    """Quality against cost per 1k requests: routers' curves, random, oracle, models and their hull."""
    if not report.rows:
        return None
    import matplotlib.pyplot as plt

    colors = _colors(report)
    fig, ax = plt.subplots(figsize=(7.6, 5.4), dpi=110)
    ax.plot(_per_1k(report.hull_cost), report.hull_quality, color="#8c564b", ls="--", lw=1.5,
            label="single-model hull (zero router)" + (" = random, expected" if not report.multi_model else ""))
    ax.scatter(_per_1k(report.model_cost), report.model_quality, color="#8c564b", s=22, zorder=3)
    for m, c, q in zip(report.models, report.model_cost, report.model_quality, strict=True):
        if report.multi_model or m in (report.weak, report.strong):
            ax.annotate(m.split("/")[-1], (float(c) * 1000, float(q)), fontsize=7, xytext=(4, -9),
                        textcoords="offset points", color="#5a3a2e")
    for r in report.rows:
        if r.curve is None:
            if r.kind == "replay":
                ax.scatter([r.cost.value * 1000], [r.quality.value], marker="D", s=40, color=colors[r.name],
                           zorder=4, label=f"{r.name} (its decisions)")
            continue
        color, ls = _FIXED_STYLE.get(r.name, (colors[r.name], "-"))
        if r.band is not None:  # random: the expected diagonal, and the band of its draws around it
            cost = np.interp(r.band.grid, r.band.expected.strong_share, r.band.expected.cost)
            ax.fill_between(_per_1k(cost), r.band.quality_low, r.band.quality_high, color=color, alpha=0.18, lw=0)
        ax.plot(_per_1k(r.curve.cost), r.curve.quality, color=color, ls=ls, lw=1.6, label=_label(r))
        if r.kind == "scoring" and r.band is None:
            ax.scatter([r.cost.value * 1000], [r.quality.value], color=color, s=30, zorder=4, edgecolor="white")
    for p in report.points:
        ax.scatter([p.cost.value * 1000], [p.quality.value], marker="D", s=40, color=colors[p.name], zorder=4,
                   label=f"{p.name} (its decisions)")
    if report.oracle_point:
        ax.scatter([report.oracle_point[0] * 1000], [report.oracle_point[1]], marker="*", s=120, color="black",
                   zorder=4, label=f"oracle, all {len(report.models)} models")
    strong_q = report.row(f"always {report.strong}").quality.value
    for lv in report.levels:
        ax.axhline(lv * strong_q, color="#bbbbbb", lw=0.8, ls=(0, (2, 3)))
        ax.annotate(f"{lv:.0%} of always-strong", (0.0, lv * strong_q), xycoords=("axes fraction", "data"), fontsize=7,
                    color="#888888", xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("cost, USD per 1,000 requests" + (" (estimated)" if report.cost_estimated else ""))
    ax.set_ylabel("quality (mean per request)")
    ax.set_title(f"{report.source}: quality against cost ({report.n:,} prompts)", fontsize=11)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_pgr_share(report: Report) -> Any:
    """PGR against the strong-call share, with each router's pointwise bootstrap band."""
    if not report.rows:
        return None
    import matplotlib.pyplot as plt

    colors = _colors(report)
    fig, ax = plt.subplots(figsize=(7.6, 5.4), dpi=110)
    if not any(r.band is not None for r in report.rows):
        ax.plot([0, 1], [0, 1], color="#8c564b", ls="--", lw=1.2, label="random, expected (and the model hull)")
    for r in report.rows:
        if r.curve is None:
            if r.kind == "replay":
                pgr = float(metrics.pgr(r.quality.value, report.rows[0].quality.value, report.rows[1].quality.value))
                ax.scatter([r.strong_share.value], [pgr], marker="D", s=40, color=colors[r.name], zorder=4, label=r.name)
            continue
        color, ls = _FIXED_STYLE.get(r.name, (colors[r.name], "-"))
        band = report.bands.get(r.name)
        if band is not None and r.name != "oracle":  # the oracle is a limit, not an estimate to hedge
            ax.fill_between(band.share, band.low, band.high, color=color, alpha=0.12, lw=0)
        apgr = f" (APGR {r.apgr.value:.3f})" if r.apgr is not None else ""
        ax.plot(r.curve.strong_share, r.curve.pgr, color=color, ls=ls, lw=1.6, label=_label(r) + apgr)
    for x in (0.5, 0.8):
        ax.axhline(x, color="#bbbbbb", lw=0.8, ls=(0, (2, 3)))
        ax.annotate(f"CPT({x:.0%})", (0.0, x), xycoords=("axes fraction", "data"), fontsize=7, color="#888888",
                    xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel(f"share of requests sent to the strong model ({report.strong})")
    ax.set_ylabel("PGR: performance gap recovered")
    ax.set_xlim(0, 1)
    top = max(1.05, *(float(np.nanmax(r.curve.pgr)) + 0.05 for r in report.rows if r.curve is not None))
    ax.set_ylim(min(-0.05, *(float(np.nanmin(r.curve.pgr)) - 0.05 for r in report.rows if r.curve is not None)), top)
    ax.set_title(f"{report.source}: PGR against strong-call share (shaded: {1 - report.alpha:.0%} bootstrap band)",
                 fontsize=11)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_levels(report: Report) -> Any:
    """Savings against always-strongest at each quality level, with intervals."""
    if not report.rows:
        return None
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = {**_colors(report), "single-model hull": "#8c564b"}
    names = list(dict.fromkeys(lr.router for lr in report.level_results))
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=110)
    width = 0.8 / max(len(names), 1)
    handles: list[Any] = []
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, lv in enumerate(report.levels):
            lr = next((x for x in report.level_results if x.router == name and x.level == lv), None)
            x = j + (i - (len(names) - 1) / 2) * width
            if lr is None or lr.savings is None:
                ax.annotate("not\nreached", (x, 0), ha="center", va="bottom", fontsize=6, color=colors.get(name, "#999999"),
                            xytext=(0, 2), textcoords="offset points")
                continue
            xs.append(x)
            ys.append(lr.savings.value * 100)
            lo.append(max(0.0, (lr.savings.value - lr.savings.low) * 100) if lr.savings.low == lr.savings.low else 0.0)
            hi.append(max(0.0, (lr.savings.high - lr.savings.value) * 100) if lr.savings.high == lr.savings.high else 0.0)
        style: dict[str, Any] = {"facecolor": colors.get(name, "#999999"), "hatch": "//" if name == "oracle" else None,
                 "edgecolor": "white" if name != "oracle" else "#555555"}
        if xs:
            ax.bar(xs, ys, width * 0.92, yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8}, **style)
        handles.append(Patch(label=name + (" (upper limit)" if name == "oracle" else ""), **style))
    ests = [x.savings for x in report.level_results if x.savings is not None]
    top = max([10.0, *(100 * np.nanmax([e.value, e.high]) for e in ests)])
    bottom = min([0.0, *(100 * np.nanmin([e.value, e.low]) for e in ests)])
    ax.set_ylim(bottom, top * 1.3)  # room for the legend above the bars
    ax.set_xticks(range(len(report.levels)), [f"keep {lv:.0%} of always-strong quality" for lv in report.levels])
    ax.set_ylabel("savings vs always-strongest (%)")
    ax.set_title(f"{report.source}: savings at quality levels (cheapest operating point reaching each level, in-sample)",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.25)
    ax.legend(handles=handles, fontsize=8, ncols=min(len(names), 4), loc="upper right")
    fig.tight_layout()
    return fig


def plot_cascades(report: Report) -> Any | None:
    """Latency of requests accepted at tier 1 against escalated ones, one panel per cascade."""
    with_latency = [(c, c.latencies) for c in report.cascades if c.latencies is not None]
    if not with_latency:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(with_latency), figsize=(9, 3.6), dpi=110, squeeze=False)
    for ax, (c, (t1, esc)) in zip(axes[0], with_latency, strict=True):
        data = [v for v in (t1, esc) if len(v)]
        labels = [lb for lb, v in (("accepted at tier 1", t1), ("escalated", esc)) if len(v)]
        ax.boxplot(data, tick_labels=labels, whis=(5, 95), showfliers=False)
        ax.set_ylabel("latency (s)")
        ax.set_title(f"{c.label}: escalation {c.escalation_rate.value:.1%}", fontsize=10)
        ax.grid(axis="y", alpha=0.25)
    fig.tight_layout()
    return fig


def plot_lifecycle(runs: Sequence[Mapping[str, Any]], floor: float, title: str = "") -> Any:
    """A simulated life per seed over time: cumulative serving and shadow cost as shares of always-strong,
    and cumulative quality served as a share of always-strong's, with each promotion (green triangle) and
    demotion (red). `runs`: gearshift.sim Run.series() dicts."""
    import matplotlib.pyplot as plt

    fig, (cost_ax, q_ax) = plt.subplots(2, 1, figsize=(8.0, 6.6), dpi=110, sharex=True)
    marks = {"promoted": ("^", "#2ca02c"), "demoted": ("v", "#d62728")}
    for i, r in enumerate(runs):
        h = np.asarray(r["hours"], float)
        serving, shadow = np.asarray(r["serving_share"], float), np.asarray(r["shadow_share"], float)
        first = i == 0
        cost_ax.plot(h, serving, color="#1f77b4", lw=0.9, alpha=0.5, label="serving" if first else None)
        cost_ax.plot(h, serving + shadow, color="#ff7f0e", lw=0.9, alpha=0.5,
                     label="serving + shadow" if first else None)
        q_ax.plot(h, r["quality_share"], color="#1f77b4", lw=0.9, alpha=0.5)
        for e in r["events"]:
            if e["kind"] in marks:
                j = min(int(np.searchsorted(h, e["hours"])), len(h) - 1)
                m, c = marks[e["kind"]]
                cost_ax.scatter([h[j]], [serving[j]], marker=m, color=c, s=28, zorder=4)
                q_ax.scatter([h[j]], [r["quality_share"][j]], marker=m, color=c, s=28, zorder=4)
    cost_ax.axhline(1.0, color="#7f7f7f", ls=":", lw=1)
    cost_ax.set_ylabel("cumulative cost / always-strong")
    cost_ax.legend(loc="lower left", fontsize=8)
    q_ax.axhline(floor, color="#d62728", ls="--", lw=1, label=f"floor {floor:.0%}")
    q_ax.set_ylabel("cumulative quality / always-strong")
    q_ax.set_xlabel("simulated hours (promotions ▲, demotions ▼)")
    q_ax.legend(loc="lower left", fontsize=8)
    if title:
        cost_ax.set_title(title, fontsize=10)
    for ax in (cost_ax, q_ax):
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


PLOTS: tuple[tuple[str, Callable[[Report], Any]], ...] = (
    ("quality_cost", plot_quality_cost), ("pgr_share", plot_pgr_share), ("levels", plot_levels),
    ("cascades", plot_cascades),
)


__all__ = ["PLOTS", "plot_cascades", "plot_levels", "plot_lifecycle", "plot_pgr_share", "plot_quality_cost", "png"]
