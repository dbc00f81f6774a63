"""Screenshots of every dashboard page into docs/ui/, from a gateway serving replayed GSM8K traffic.

Starts a gateway with /ui (tests/support/ui_helpers: a shadowed cascade, an A/B split, three client
keys), sends it N GSM8K prompts answered from the recorded outcomes, then spreads the traces' times over
the last 24 hours (the replay answers in milliseconds; the pages are made for a day of traffic), adds
two router versions, three alert episodes (written through the store as the watch loop writes them: the
replayed traffic itself does not drift) and a lab report (feedback: the recorded quality of every third
answer), and saves each page at 1280x800 with headless Chromium.

    GEARSHIFT_DATA=../shared/datasets python scripts/ui_screenshots.py [--prompts 400] [--out docs/ui] [--pages watch]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gearshift.outcomes.datasets import load  # noqa: E402
from gearshift.store.base import TraceStore  # noqa: E402
from gearshift.watch.loop import alerts_name  # noqa: E402
from tests.support.ui_helpers import ADMIN_KEY, browser, ui_gateway  # noqa: E402

PAGES = ("overview", "routers", "watch", "traces", "ab", "keys", "reports")


def spread(db: Path, hours: float = 24.0) -> None:
    """Move the traces' times evenly over the last `hours`, in their order (feedback follows its trace)."""
    con = sqlite3.connect(db)
    ids = [r[0] for r in con.execute("SELECT id FROM traces ORDER BY created, id")]
    now = time.time()
    step = hours * 3600 / max(1, len(ids))
    con.executemany("UPDATE traces SET created = ? WHERE id = ?",
                    [(now - hours * 3600 + step * (i + 0.5), tid) for i, tid in enumerate(ids)])
    con.execute("UPDATE feedback SET created = (SELECT created FROM traces WHERE traces.id = feedback.trace_id)")
    con.commit()
    con.close()


def episodes(store: TraceStore, watched: str, now: float) -> None:
    """Three alert episodes of the last day: two ended (raised and cleared by different replicas), one open."""
    for metric, rule, value, base, bound, start_h, end_h, end_value in (
            ("escalation_rate", "abs change", 0.31, 0.18, 0.10, 15.0, 11.5, 0.19),
            ("latency_p95_ms", "ratio", 2140.0, 1210.0, 1.5, 7.0, 6.2, 1350.0),
            ("psi_prompt_tokens", "psi", 0.34, 0.0, 0.25, 1.5, None, None)):
        store.open_episode({"watch": watched, "router": None, "metric": metric, "rule": rule, "value": value,
                            "baseline": base, "bound": bound, "started": now - start_h * 3600, "raised_by": "gw-1:4711"})
        if end_h is not None:
            store.close_episode(watched, metric, now - end_h * 3600, end_value, "gw-2:4802")


def small_png(path: Path, colors: int = 128) -> None:
    """Re-save a screenshot with a palette (a UI has few colours): a fraction of the size."""
    from PIL import Image

    with Image.open(path) as im:
        im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=400)
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "ui")
    ap.add_argument("--pages", nargs="*", choices=PAGES, default=list(PAGES), help="only these pages")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gearshift-ui-shots-"))
    reports = tmp / "reports"
    reports.mkdir()
    (reports / "gsm8k-routers.html").write_text("<html><body><h1>GSM8K routers</h1></body></html>")
    prompts = [str(p) for p in load("routellm/gsm8k").prompts[:args.prompts]]
    # Every third answer gets feedback: its recorded quality, sent by its client through /v1/feedback.
    with ui_gateway(tmp, prompts, reports, feedback_every=3) as gw:
        store = gw.gateway.store
        spread(tmp / "traces.db")
        first = store.add_router_version("gearshift/cascade", {"threshold": 0.42}, {}, "lab recalibrate")
        store.promote("gearshift/cascade", first, "alice")
        second = store.add_router_version("gearshift/cascade", {"threshold": 0.55}, {}, "lab recalibrate")
        store.promote("gearshift/cascade", second, "bob")
        episodes(store, alerts_name(gw.gateway.config.watch), time.time())
        newest_escalated = next(r["id"] for r in store.find_traces(escalated=True, limit=1))
        with browser(gw.url, tmp) as b:
            b.sign_in(ADMIN_KEY)
            b.wait_ready("overview")
            for page in args.pages:
                b.open(f"/ui/{page}" + (f"?escalated=yes&trace={newest_escalated}" if page == "traces" else ""))
                b.wait_ready(page)
                time.sleep(0.3)  # charts finish drawing
                if page == "traces":
                    b.driver.execute_script("window.scrollTo(0, 0)")
                errors = b.console_errors()
                assert not errors, (page, errors)
                shots = [(page, None)] + ([("trace", "trace-detail")] if page == "traces" else [])
                for name, element in shots:
                    if element:  # the opened trace, scrolled to the top of the window
                        b.driver.execute_script(f"document.getElementById('{element}').scrollIntoView()")
                    path = args.out / f"{name}.png"
                    b.driver.save_screenshot(str(path))
                    small_png(path)
                    print(f"{path} {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
