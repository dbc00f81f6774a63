"""The report as one self-contained HTML page (plots embedded as data URIs)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gearshift.lab.bootstrap import Estimate

if TYPE_CHECKING:
    from gearshift.lab.report import Report

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.meta{color:#555;margin-top:0} table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:4px 9px;border-bottom:1px solid #e6e6e6;text-align:right;vertical-align:top}
th{background:#f4f4f4;font-weight:600} td:first-child,th:first-child{text-align:left}
td small{color:#888;white-space:nowrap} img{max-width:100%;border:1px solid #eee;margin:6px 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px} .pair img{width:100%;box-sizing:border-box}
ul.notes{color:#555;font-size:13px} .muted{color:#999}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _cell(e: Estimate | None, scale: float = 1.0, spec: str = ".3f", prefix: str = "", suffix: str = "") -> str:
    if e is None:
        return '<span class="muted">-</span>'
    v = e.value * scale
    if e.low != e.low:  # NaN interval: too few resamples had a value
        return f"{prefix}{v:{spec}}{suffix}"
    return (f"{prefix}{v:{spec}}{suffix}<br><small>{prefix}{e.low * scale:{spec}}{suffix} - "
            f"{e.high * scale:{spec}}{suffix}</small>")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    h = "".join(f"<th>{_esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def summary_rows(report: Report) -> list[list[str]]:
    """The summary table's cells (HTML)."""
    out = []
    for r in report.rows:
        ratio = report.ratios[r.name]
        out.append([_esc(report.display_name(r)), _cell(r.cost, 1000, ".3f", "$"), _cell(ratio["savings"], 100, ".1f", suffix="%"),
                    _cell(r.quality), _cell(ratio["quality_retained"], 100, ".1f", suffix="%"),
                    _cell(r.strong_share, 100, ".1f", suffix="%"), _cell(r.apgr),
                    _cell(r.cpt50, 100, ".1f", suffix="%"), _cell(r.cpt80, 100, ".1f", suffix="%")])
    for p in report.points:
        out.append([_esc(p.name), _cell(p.cost, 1000, ".3f", "$"), _cell(p.savings, 100, ".1f", suffix="%"),
                    _cell(p.quality), _cell(p.quality_retained, 100, ".1f", suffix="%"), "-", "-", "-", "-"])
    return out


SUMMARY_HEAD = ("router", "$ per 1k requests", "savings vs always-strongest", "quality", "quality retained",
                "strong calls", "APGR", "CPT(50%)", "CPT(80%)")


def _cascade_section(report: Report, images: Mapping[str, bytes]) -> list[str]:
    parts = ["<h2 id=\"cascades\">Cascades: accepted at tier 1 against escalated</h2>"]
    if report.cascades:
        crows = []
        for c in report.cascades:
            for label, g in (("accepted at tier 1", c.tier1), ("escalated", c.escalated)):
                crows.append([_esc(f"{c.label} ({c.source})"), label, f"{g.count:,}",
                              "-" if g.latency_p50 is None else f"{g.latency_p50 * 1000:.0f} ms",
                              "-" if g.latency_p95 is None else f"{g.latency_p95 * 1000:.0f} ms",
                              f"${g.spend:.4f}", "-" if g.gate_spend is None else f"${g.gate_spend:.4f}"])
            crows.append([_esc(f"{c.label} ({c.source})"), "<b>all</b>", f"{c.requests:,}",
                          "escalation rate " + _cell(c.escalation_rate, 100, ".1f", suffix="%"), "",
                          f"<b>${c.spend:.4f}</b><br><small>per request {_cell(c.spend_per_request, 1, '.6f', '$')}</small>",
                          "-" if c.gate_spend is None else f"${c.gate_spend:.4f}"])
        parts.append(_table(["cascade", "group", "requests", "latency p50", "latency p95", "spend incl. gates",
                             "of which gates"], crows))
        if "cascades" in images:
            parts.append(_img(images["cascades"], "cascade latency"))
    else:
        parts.append("<p class=\"muted\">No cascade data: these outcomes carry no escalations. Traces of cascade routers "
                     "(<code>gearshift lab report --config FILE</code>) or a cascade replay "
                     "(<code>gearshift.lab.cascade.cascade_records</code>) fill this section.</p>")
    return parts


def _render_cascades_only(report: Report, images: Mapping[str, bytes], command: str) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gearshift lab report: "
             f"{_esc(report.source)}</title><style>{_CSS}</style></head><body>",
             f"<h1>gearshift lab report: {_esc(report.source)}</h1>",
             f"<p class=\"meta\">No graded pairs of two models: only the cascade split is shown. Intervals: "
             f"{1 - report.alpha:.0%} bootstrap percentile intervals ({report.n_boot:,} resamples). Generated "
             f"{report.created} in {report.seconds:.1f} s.</p>"]
    parts += _cascade_section(report, images)
    if report.notes:
        parts.append("<h2 id=\"notes\">Notes</h2><ul class=\"notes\">"
                     + "".join(f"<li>{_esc(n)}</li>" for n in report.notes) + "</ul>")
    if command:
        parts.append(f"<p class=\"meta\">Command: <code>{_esc(command)}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_html(report: Report, images: Mapping[str, bytes], command: str = "") -> str:
    """The report as one HTML document; `images` (name -> PNG bytes) are embedded as data URIs."""
    conf = f"{1 - report.alpha:.0%}"
    if not report.rows:
        return _render_cascades_only(report, images, command)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gearshift lab report: "
             f"{_esc(report.source)}</title><style>{_CSS}</style></head><body>",
             f"<h1>gearshift lab report: {_esc(report.source)}</h1>",
             f"<p class=\"meta\">{report.n:,} prompts; weak <b>{_esc(report.weak)}</b>, strong <b>{_esc(report.strong)}</b>"
             f"{'; ' + str(len(report.models)) + ' models' if report.multi_model else ''}. Intervals: {conf} bootstrap "
             f"percentile intervals over prompts ({report.n_boot:,} resamples, the same for every router). "
             f"Generated {report.created} in {report.seconds:.1f} s.</p>",
             "<h2 id=\"summary\">Summary</h2>",
             "<p>Each router at its configured operating point (random: half the calls strong, its expected figures "
             "(the diagonal between always-weak and always-strong) with the 5th-95th percentiles of seeded draws "
             "under them in place of a bootstrap interval; oracle: strong exactly where the strong answer is better). Savings and quality retained are against always-strongest; APGR and "
             "CPT are over each router's whole threshold sweep (RouteLLM's definitions).</p>",
             _table(SUMMARY_HEAD, summary_rows(report))]
    curves = [_img(images[k], alt) for k, alt in (("quality_cost", "quality against cost"),
                                                   ("pgr_share", "PGR against strong-call share")) if k in images]
    if curves:
        parts += ["<h2 id=\"curves\">Cost-quality curves</h2>", "<div class=\"pair\">" + "".join(curves) + "</div>"]
    parts += ["<h2 id=\"levels\">Savings at quality levels</h2>",
              "<p>For each router, the cheapest operating point (thresholds mixed at random between two adjacent "
              "points) whose quality is at least the level times always-strongest quality. Chosen on the same prompts "
              "it is measured on, so it is optimistic; <code>gearshift lab check</code> calibrates on one half and "
              "reports the other.</p>"]
    names = list(dict.fromkeys(lr.router for lr in report.level_results))
    lrows = []
    for name in names:
        cells = [_esc(name)]
        for lv in report.levels:
            lr = next((x for x in report.level_results if x.router == name and x.level == lv), None)
            if lr is None or lr.savings is None:
                cells.append('<span class="muted">not reached</span>')
            else:
                share = f"<br><small>strong calls {lr.strong_share.value:.1%}</small>" if lr.strong_share else ""
                cells.append(_cell(lr.savings, 100, ".1f", suffix="%") + share)
        lrows.append(cells)
    parts.append(_table(["router", *(f"keep {lv:.0%}" for lv in report.levels)], lrows))
    if "levels" in images:
        parts.append(_img(images["levels"], "savings at quality levels"))
    if report.multi_model:
        parts += ["<h2 id=\"models\">All models (RouterBench)</h2>",
                  "<p>Always using one model; the single-model hull is the non-decreasing convex hull of these points "
                  "(randomly mixing models, no intelligence). AIQ: the mean of a router's hull over the cost range "
                  f"${report.aiq_range[0] * 1000:.3f} - ${report.aiq_range[1] * 1000:.3f} per 1k requests "
                  "(cheapest to dearest model).</p>" if report.aiq_range else "",
                  _table(["model", "$ per 1k requests", "quality"],
                         [[_esc(m), f"${c * 1000:.3f}", f"{q:.3f}"]
                          for m, c, q in sorted(zip(report.models, report.model_cost, report.model_quality, strict=True),
                                                key=lambda t: t[1])]),
                  _table(["router", "AIQ"], [[_esc(k), f"{v:.4f}"] for k, v in sorted(report.aiq.items(), key=lambda kv: -kv[1])])]
    parts += _cascade_section(report, images)
    notes = list(report.notes) + [
        "PGR = (q - q_weak) / (q_strong - q_weak); APGR = area under PGR over the strong-call share; CPT(x%) = least "
        "strong-call share reaching PGR x% (RouteLLM, arXiv 2406.18665). The oracle sends a prompt strong exactly "
        "when the strong answer is better: no router can do better at any share.",
        "The single-model hull and AIQ follow RouterBench (arXiv 2403.12031).",
    ]
    parts.append("<h2 id=\"notes\">Notes</h2><ul class=\"notes\">" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    if command:
        parts.append(f"<p class=\"meta\">Command: <code>{_esc(command)}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)



__all__ = ["SUMMARY_HEAD", "render_html", "summary_rows"]
