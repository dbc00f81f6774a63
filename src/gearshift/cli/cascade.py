"""`gearshift lab train-gate` and `gearshift lab cascade`: cascades on recorded outcomes."""

from __future__ import annotations

import json
from typing import Any

import click

from gearshift.cli.lab import lab_group
from gearshift.cli.outcomes import drop_contaminated_option


def _load(spec: str, drop_contaminated: bool):  # type: ignore[no-untyped-def]
    from gearshift.outcomes import datasets

    try:
        return datasets.load(spec, drop_contaminated=drop_contaminated)
    except (ValueError, FileNotFoundError) as e:
        raise click.UsageError(str(e)) from None


@lab_group.command("train-gate")
@click.option("--outcomes", "spec", required=True, help="dataset name or outcomes file (needs response text)")
@drop_contaminated_option
@click.option("--weak", default=None, help="the cheap model's column, whose answers the gate judges")
@click.option("--strong", default=None, help="the escalation model's column (for --target gain)")
@click.option("--target", type=click.Choice(["gain", "wrong"]), default="gain", show_default=True,
              help="gain: escalate where the strong answer is better; wrong: where the cheap answer is wrong")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(0), help="cross-validation folds "
              "for held-out figures and the threshold (0: none)")
@click.option("--pgr", default=0.8, show_default=True, type=click.FloatRange(0, 1),
              help="suggested threshold: the least escalation reaching this PGR on held-out folds")
@click.option("--C", "c", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="inverse regularisation strength")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="artifact to write (JSON)")
def train_gate(spec: str, drop_contaminated: bool, weak: str | None, strong: str | None, target: str, folds: int,
               pgr: float, c: float, out: str) -> None:
    """Train a learned gate on the cheap model's recorded answers; report held-out APGR and CPT."""
    import numpy as np
    from rich.console import Console

    from gearshift.gates.learned import LearnedGate, LearnedOptions
    from gearshift.lab import metrics
    from gearshift.lab.evaluate import complete, default_pair
    from gearshift.lab.gating import answer_checks, gate_scores, sweep_cascade, train_learned_gate

    console = Console()
    o = _load(spec, drop_contaminated)
    dw, ds = default_pair(o) if weak is None or strong is None else (weak, strong)
    weak, strong = weak or dw, strong or ds
    for m in (weak, strong):
        if m not in o.models:
            raise click.UsageError(f"model {m!r} is not in {spec}; it has {o.models}")
    o = complete(o, [weak, strong])
    checks = answer_checks(o, weak)
    threshold = 0.5
    if folds > 1:
        esc = np.empty(len(o))
        for held in np.array_split(np.random.default_rng(0).permutation(len(o)), folds):
            rows = np.setdiff1d(np.arange(len(o)), held)
            model = train_learned_gate(o, weak, strong, target=target, rows=rows, checks=checks, C=c)  # type: ignore[arg-type]
            gate = LearnedGate(LearnedOptions(kind="learned", artifact="<fold>"), model=model)
            esc[held] = gate_scores([gate], o.subset(held), weak).escalation_scores()
        curve = sweep_cascade(esc, o, weak, strong)
        reached = np.flatnonzero(curve.pgr >= pgr)
        if len(reached):
            t = float(curve.threshold[reached[0]])
            threshold = float(np.nextafter(1.0 - t, np.inf)) if np.isfinite(t) else 0.0
        console.print(f"held-out ({folds} folds, {len(o)} prompts): APGR {metrics.apgr(curve):.3f}, "
                      f"CPT(50%) {metrics.cpt(curve, 0.5):.1%}, CPT(80%) {metrics.cpt(curve, 0.8):.1%}; "
                      f"PGR {pgr:.0%} at {metrics.cpt(curve, pgr):.1%} escalated, gate threshold {threshold:.3f}")
    model = train_learned_gate(o, weak, strong, target=target, checks=checks, C=c, threshold=threshold)  # type: ignore[arg-type]
    model.header["trained_on"]["outcomes_spec"] = spec
    model.save(out)
    console.print(f"wrote {out}; use it as a gate of the cheap tier:\n"
                  f"  gates: [{{kind: learned, artifact: {out}, threshold: {threshold:.3f}}}]")


@lab_group.command("cascade")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--router", "name", required=True, help="a router of kind cascade in --config")
@click.option("--outcomes", "spec", required=True, help="dataset name or outcomes file (needs response text)")
@drop_contaminated_option
@click.option("--floor", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="also calibrate tier 1's gate (a judge, else the learned gate, else all gates together) to keep "
                   "this share of always-strong quality: fitted on half the prompts, reported on the other half")
@click.option("--json", "as_json", is_flag=True)
def lab_cascade(config_path: str, name: str, spec: str, drop_contaminated: bool, floor: float | None,
                as_json: bool) -> None:
    """Replay a configured cascade on recorded answers: escalation rate, quality, spend including the
    cheap calls and gates, tier 1 against escalated; and the sweep of its first tier's gates. Judge
    gates replay their recorded verdicts (outcomes `<model>|judge` columns)."""
    import numpy as np
    from rich.console import Console

    from gearshift.cli.lab import _configured
    from gearshift.lab import metrics
    from gearshift.lab.gating import calibrate_gate, gate_scores, sweep_cascade
    from gearshift.lab.replay import check_recorded, replay_cascade

    [router], columns = _configured(config_path, [name])
    if getattr(router, "kind", "") != "cascade":
        raise click.UsageError(f"router {name!r} is of kind {router.kind!r}, not cascade")
    o = _load(spec, drop_contaminated)
    try:
        rep = replay_cascade(router, o, columns=columns)
    except (KeyError, ValueError) as e:
        raise click.UsageError(str(e).strip('"')) from None
    summary: dict[str, Any] = rep.summary()
    tiers = router.tier_models  # type: ignore[attr-defined]
    first_gates = router.gates[0]  # type: ignore[attr-defined]
    weak, strong = (columns.get(m, m) for m in (tiers[0], tiers[-1]))
    try:
        check_recorded(first_gates, o, weak)
        replayable = bool(first_gates)
    except ValueError:
        replayable = False
    if replayable:
        swept = [g.name for g in first_gates if g.kind == "judge"] or [g.name for g in first_gates if g.kind == "learned"]
        gs = gate_scores(list(first_gates), o, weak)
        curve = sweep_cascade(gs.escalation_scores(swept[0] if swept else None), o, weak, strong, gs.cost)
        summary["sweep"] = {"swept": swept[0] if swept else "lowest gate score", "weak": weak, "strong": strong,
                            "apgr": metrics.apgr(curve), "cpt50": metrics.cpt(curve, 0.5),
                            "cpt80": metrics.cpt(curve, 0.8)}
        if floor is not None:
            gc = calibrate_gate(gs, o, weak, strong, floor, sweep=swept[0] if swept else None)
            c = gc.calibration
            summary["calibration"] = {
                "gate": gc.gate, "floor": floor, "threshold": gc.threshold, "lower_bound": c.bound,
                "held_out": gc.held_out, "retained_held_out": c.retained_test, "held": c.held,
                "escalation_rate_held_out": gc.escalation_rate, "gate_usd_per_request": gc.gate_usd,
                "added_latency_escalated_s": None if gc.added_latency is None else
                {"p50": gc.added_latency[0], "p95": gc.added_latency[1]}, "verdicts": gc.verdicts}
    elif floor is not None:
        raise click.UsageError(f"tier 1's gates of {name!r} cannot be replayed on {o.name}: a judge needs its "
                               f"recorded verdicts (`{weak}|judge` columns)")
    in_sample = sorted({g.name for gates in router.gates for g in gates  # type: ignore[attr-defined]
                        if g.kind == "learned" and g.model.header.get("trained_on", {}).get("outcomes") == o.name})
    summary["in_sample_gates"] = in_sample
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    if in_sample:
        console.print(f"[yellow]note: learned gate(s) {in_sample} were trained on {o.name}: these figures are in-sample "
                      f"(optimistic); `gearshift lab train-gate` reports held-out ones[/]")
    n = summary["requests"]
    console.print(f"[bold]{name}[/] on {o.name}: {n} requests, escalation rate {summary['escalation_rate']:.1%}, "
                  f"quality {summary['quality']:.3f}, spend ${summary['spend_usd'] / n * 1000:.4f} per 1k requests "
                  f"(gates ${summary['gate_spend_usd'] / n * 1000:.4f})" + (" (estimated)" if o.cost_estimated else ""))
    for label in ("accepted_at_tier1", "escalated"):
        g = summary[label]
        lat = "" if g["latency_p50_s"] is None else f", latency p50 {g['latency_p50_s']:.2f}s p95 {g['latency_p95_s']:.2f}s"
        console.print(f"  {label.replace('_', ' ')}: {g['count']} requests, spend ${g['spend_usd']:.4f}{lat}")
    console.print(f"  answered by tier: {dict(zip(tiers, np.bincount(rep.tier, minlength=len(tiers)).tolist(), strict=True))}")
    if "sweep" in summary:
        s = summary["sweep"]
        console.print(f"  sweep of tier 1's gates ({s['swept']}; {s['weak']} -> {s['strong']}): APGR {s['apgr']:.3f}, "
                      f"CPT(50%) {s['cpt50']:.1%}, CPT(80%) {s['cpt80']:.1%}")
    if "calibration" in summary:
        c = summary["calibration"]
        thr = "a mix of two settings" if c["threshold"] is None else f"{c['threshold']:.4g}"
        console.print(f"  calibrated {c['gate']} for a {c['floor']:.0%} floor: threshold {thr} (lower bound of retained "
                      f"{c['lower_bound']:.1%}); on {c['held_out']} held-out prompts retained {c['retained_held_out']:.1%} "
                      f"({'held' if c['held'] else 'MISSED'}), escalation {c['escalation_rate_held_out']:.1%}")
        lat = c["added_latency_escalated_s"]
        console.print(f"  its cost: gates ${c['gate_usd_per_request'] * 1000:.4f} per 1k requests (every request pays it); "
                      "escalated requests wait " + ("? (no recorded latency)" if lat is None else
                                                    f"{lat['p50']:.2f}s p50, {lat['p95']:.2f}s p95") +
                      " for the cheap answer and the gates before the strong call starts")
        v = c["verdicts"]
        console.print(f"  verdict vs outcome (held out): accepted and as good {v['accepted_ok']}, accepted but worse "
                      f"{v['accepted_worse']}, escalated and needed {v['escalated_needed']}, escalated needlessly "
                      f"{v['escalated_needless']}")
