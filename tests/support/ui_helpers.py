"""A gateway with its dashboard, filled with replayed GSM8K traffic, and a headless Chromium to drive it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import yaml

from gearshift.gateway.server import Running, running
from gearshift.plan import load as load_plan
from gearshift.ui import gateway_routes
from tests.support.gateway_helpers import REPO, settle

ADMIN_KEY, APP_KEY, BATCH_KEY = "sk-ui-admin-0123456789", "sk-ui-app-0123456789", "sk-ui-batch-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def ui_config_file(tmp_path: Path) -> Path:
    """GSM8K on recorded answers: a shadowed cascade, an A/B split of always-weak against always-strong,
    three client keys (one admin; `app` in the team `search`), a reports folder."""
    base = yaml.safe_load((REPO / "examples" / "replay-gsm8k.yaml").read_text())
    base["routers"] = {
        "gearshift/cascade": {**base["routers"]["gearshift/cascade"],
                              "shadow": {"rate": 0.5, "compare": "final_answer"}},
        "gearshift/weak": base["routers"]["gearshift/weak"],
        "gearshift/strong": base["routers"]["gearshift/strong"],
        "gearshift/ab": {"kind": "split", "arms": {"gearshift/weak": 1, "gearshift/strong": 1}, "sticky": "none"},
    }
    base["store"] = {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05}
    base["server"] = {"open": False}
    base["teams"] = {"search": {"limits": {"usd_month": 100}}}
    base["client_keys"] = [{"name": "ops", "key_env": "GS_UI_ADMIN", "admin": True},
                           {"name": "app", "key_env": "GS_UI_APP", "team": "search"},
                           {"name": "batch", "key_env": "GS_UI_BATCH"}]
    os.environ.update(GS_UI_ADMIN=ADMIN_KEY, GS_UI_APP=APP_KEY, GS_UI_BATCH=BATCH_KEY)
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@dataclass
class Sent:
    trace_id: str
    key: str
    quality: float | None  # the recorded quality of the answer the client got


def send_traffic(url: str, prompts: list[str]) -> list[Sent]:
    """Each prompt once: most to the cascade (key app), some to the A/B split (key batch)."""
    clients = {k: openai.OpenAI(base_url=url + "/v1", api_key=k, max_retries=0) for k in (APP_KEY, BATCH_KEY)}

    def one(i: int) -> Sent:
        key, router = (BATCH_KEY, "gearshift/ab") if i % 4 == 3 else (APP_KEY, "gearshift/cascade")
        raw = clients[key].chat.completions.with_raw_response.create(
            model=router, messages=[{"role": "user", "content": prompts[i]}])
        replay = (raw.parse().model_extra or {}).get("gearshift_replay") or {}
        return Sent(raw.headers["x-gearshift-trace-id"], key, replay.get("quality"))

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(len(prompts))))


@contextlib.contextmanager
def ui_gateway(tmp_path: Path, prompts: list[str], reports: Path | None = None,
               feedback_every: int = 0) -> Iterator[Running]:
    """A running gateway with /ui, its store holding the traces of `prompts` (written and shadowed);
    with `feedback_every` n, every n-th answer gets its recorded quality as feedback from its client."""
    path = ui_config_file(tmp_path)
    with running(load_plan(path, serving=True), routes=gateway_routes(reports)) as gw:
        sent = send_traffic(gw.url, prompts)
        settle(gw)
        for s in sent[::feedback_every] if feedback_every else ():
            if s.quality is not None:
                req = urllib.request.Request(gw.url + "/v1/feedback", method="POST",
                                             data=json.dumps({"trace_id": s.trace_id, "score": s.quality}).encode(),
                                             headers={"Authorization": f"Bearer {s.key}",
                                                      "Content-Type": "application/json"})
                urllib.request.urlopen(req).close()
        yield gw


@dataclass
class Browser:
    """Headless Chromium through Debian's chromedriver (selenium never downloads a browser here)."""

    driver: Any
    base: str

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait_ready(self, page: str, seconds: float = 20) -> None:
        """Wait until app.js has rendered `page` (main[data-ready])."""
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, seconds).until(
            lambda d: d.execute_script("return document.getElementById('main')?.dataset.ready") in (page, "error"))
        assert self.driver.execute_script("return document.getElementById('main').dataset.ready") == page

    def console_errors(self) -> list[str]:
        """Console messages at SEVERE (errors, CSP violations, failed loads) since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def sign_in(self, key: str) -> None:
        from selenium.webdriver.common.by import By

        self.open("/ui/login")
        self.wait_ready("login")
        self.driver.find_element(By.ID, "key").send_keys(key)
        self.driver.find_element(By.ID, "signin").click()


@contextlib.contextmanager
def browser(base: str, tmp_path: Path, width: int = 1280, height: int = 800) -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--window-size={width},{height}", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield Browser(driver, base)
    finally:
        driver.quit()
