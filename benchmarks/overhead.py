"""Gateway overhead: the same load direct to a fake upstream and through gearshift, in one run.

Prints requests/s, added p50/p99 latency and gateway CPU per request (process CPU time / requests)
at concurrency 1, 16 and 64, the gateway's throughput and CPU per request against the pass-through's,
resident memory and start-up time; gearshift with OpenTelemetry on (`gs-otel`: exporting every request's
spans over OTLP/HTTP to a local receiver that discards them), against the `gearshift` row (OTel off: no
OTEL_* variables); the same request through gearshift's `/v1/messages` (`gs-messages`:
Anthropic's format) and `/v1/responses` (`gs-responses`), both translated to the same upstream chat
request, against its chat completions; a bare aiohttp pass-through proxy (the floor for any Python
gateway here, `aiohttp-pt`); and LiteLLM's proxy on the same upstream when it is installed (set
LITELLM_BIN to its `litellm` command, or have `litellm` on PATH).

`--rounds N` measures every target N times, interleaved (all targets once, then again), and prints
each figure's median; each ratio is then the median of the N same-round ratios, with their range. This
host is shared and its speed swings by tens of percent within a minute: a ratio of two rows measured
seconds apart in one round is steadier than either row.

    python benchmarks/overhead.py [--seconds 3] [--concurrency 1,16,64] [--rounds 1] [--workers 2]
        [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
# Both gateways authenticate clients, as they would in production (LiteLLM refuses to start without a key).
CLIENT_KEY = "sk-bench-" + os.urandom(16).hex()
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "Say ok."}],
                   "max_tokens": 5}).encode()
# The same request in Anthropic's Messages format, for the /v1/messages row (translated to the same upstream).
MESSAGES_BODY = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "Say ok."}],
                            "max_tokens": 5}).encode()
# The same question on the Responses API: gearshift translates it to the same chat request upstream.
RESPONSES_BODY = json.dumps({"model": "gearshift/auto", "input": "Say ok.", "max_output_tokens": 5}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [int(p) for p in _children(pid)]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in [pid] + [int(c) for c in _children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


async def wait_ready(url: str, timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        while time.perf_counter() - t0 < timeout:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return time.perf_counter() - t0
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, concurrency: int, seconds: float, headers: dict[str, str], model: str) -> tuple[np.ndarray, int]:
    """Closed-loop load: `concurrency` workers, each sends one request after another."""
    body = {"/v1/messages": MESSAGES_BODY, "/v1/responses": RESPONSES_BODY}.get(url[url.find("/v1/"):], BODY)
    body = body.replace(b"gearshift/auto", model.encode())
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        # Warm-up: connections open, caches filled.
        for _ in range(min(20, concurrency * 2)):
            async with s.post(url, data=body, headers=headers) as r:
                await r.read()

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with s.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return np.array(latencies) * 1000, errors


def measure(name: str, url: str, pid: int | None, concurrency: int, seconds: float,
            headers: dict[str, str], model: str) -> dict[str, float]:
    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    lat, errors = asyncio.run(load(url, concurrency, seconds, headers, model))
    wall = time.perf_counter() - t0
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    return {"rps": len(lat) / wall, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "cpu_ms": cpu / len(lat) * 1000 if pid else 0.0, "n": len(lat), "errors": errors}


def gearshift_config(upstream: str, tmp: Path) -> Path:
    config = {
        "models": {
            "cheap": {"provider": "openai", "upstream_id": "bench", "base_url": upstream + "/v1",
                      "price": {"input": 0.15, "output": 0.6}, "rank": 1},
            "strong": {"provider": "openai", "upstream_id": "bench", "base_url": upstream + "/v1",
                       "price": {"input": 2.5, "output": 10}, "rank": 9},
        },
        "routers": {"gearshift/auto": {"kind": "rules", "default": "cheap", "fallbacks": ["strong"], "rules": [
            {"name": "vip", "when": {"metadata": {"tier": "enterprise"}}, "model": "strong"},
            {"name": "long", "when": {"min_tokens": 4000}, "model": "strong"},
            {"name": "code", "when": {"keywords": ["traceback", "refactor", "prove"]}, "model": "strong"},
        ]}},
        "store": {"url": f"sqlite:///{tmp / 'bench.db'}"},
        "client_keys": [{"name": "bench", "key": CLIENT_KEY}],
    }
    path = tmp / "gearshift.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def litellm_command() -> str | None:
    return os.environ.get("LITELLM_BIN") or shutil.which("litellm") or (
        "/tmp/litellm-venv/bin/litellm" if Path("/tmp/litellm-venv/bin/litellm").exists() else None)


# The gateways run without the caller's OTEL_* variables: OTel is off unless a row turns it on.
QUIET_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or QUIET_ENV,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=1, help="measure every target this many times, interleaved; "
                    "print medians, and ratios as the median of the same-round ratios with their range")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="also run gearshift with this many worker processes")
    ap.add_argument("--baseline-src", default=None,
                    help="also run the gearshift of another checkout's src/ (row gs-baseline), e.g. the main branch's")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="gearshift-bench-"))
    up_port, gs_port = free_port(), free_port()
    upstream = start([sys.executable, str(HERE / "upstream.py"), str(up_port)])
    procs = [upstream]
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{up_port}/v1/models"))
        cfg = gearshift_config(f"http://127.0.0.1:{up_port}", tmp)
        t0 = time.perf_counter()
        gateway = start([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg), "--port", str(gs_port),
                         "--log-level", "WARNING"])
        procs.append(gateway)
        startup = asyncio.run(wait_ready(f"http://127.0.0.1:{gs_port}/health")) + 0 * t0
        pt_port = free_port()
        passthrough = start([sys.executable, str(HERE / "passthrough.py"), str(pt_port), f"http://127.0.0.1:{up_port}"])
        procs.append(passthrough)
        asyncio.run(wait_ready(f"http://127.0.0.1:{pt_port}/health"))
        wpt_port = free_port()
        wire_pt = start([sys.executable, str(HERE / "passthrough.py"), str(wpt_port), f"http://127.0.0.1:{up_port}",
                         "--wire"])
        procs.append(wire_pt)
        asyncio.run(wait_ready(f"http://127.0.0.1:{wpt_port}/health"))
        sink_port, otel_port = free_port(), free_port()
        sink = start([sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)])
        procs.append(sink)
        asyncio.run(wait_ready(f"http://127.0.0.1:{sink_port}/count"))
        otel = start([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg), "--port", str(otel_port),
                      "--log-level", "WARNING"],
                     env={**QUIET_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"})
        procs.append(otel)
        asyncio.run(wait_ready(f"http://127.0.0.1:{otel_port}/health"))
        targets = [("direct", f"http://127.0.0.1:{up_port}/v1/chat/completions", None, {}, "bench"),
                   ("aiohttp-pt", f"http://127.0.0.1:{pt_port}/v1/chat/completions", passthrough.pid, {}, "bench"),
                   ("wire-pt", f"http://127.0.0.1:{wpt_port}/v1/chat/completions", wire_pt.pid, {}, "bench"),
                   ("gearshift", f"http://127.0.0.1:{gs_port}/v1/chat/completions", gateway.pid, AUTH, "gearshift/auto"),
                   ("gs-otel", f"http://127.0.0.1:{otel_port}/v1/chat/completions", otel.pid, AUTH, "gearshift/auto"),
                   ("gs-messages", f"http://127.0.0.1:{gs_port}/v1/messages", gateway.pid, AUTH, "gearshift/auto"),
                   ("gs-responses", f"http://127.0.0.1:{gs_port}/v1/responses", gateway.pid, AUTH, "gearshift/auto")]
        if args.baseline_src:
            base_port = free_port()
            base = start([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg), "--port", str(base_port),
                          "--log-level", "WARNING"], env={**QUIET_ENV, "PYTHONPATH": str(Path(args.baseline_src).resolve())})
            procs.append(base)
            asyncio.run(wait_ready(f"http://127.0.0.1:{base_port}/health"))
            targets.append(("gs-baseline", f"http://127.0.0.1:{base_port}/v1/chat/completions", base.pid, AUTH,
                            "gearshift/auto"))
        if args.workers > 1:
            gw_port = free_port()
            multi = start([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg), "--port", str(gw_port),
                           "--workers", str(args.workers), "--log-level", "WARNING"])
            procs.append(multi)
            asyncio.run(wait_ready(f"http://127.0.0.1:{gw_port}/health"))
            targets.append((f"gearshift-{args.workers}w", f"http://127.0.0.1:{gw_port}/v1/chat/completions", multi.pid,
                            AUTH, "gearshift/auto"))
        lite = None if args.no_litellm else litellm_command()
        if lite:
            ll_port = free_port()
            ll_cfg = tmp / "litellm.yaml"
            ll_cfg.write_text(yaml.safe_dump({"model_list": [{"model_name": "bench", "litellm_params": {
                "model": "openai/bench", "api_base": f"http://127.0.0.1:{up_port}/v1", "api_key": "none"}}],
                "litellm_settings": {"drop_params": True}}))
            env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                   "LITELLM_MASTER_KEY": CLIENT_KEY}
            litellm = start([lite, "--config", str(ll_cfg), "--port", str(ll_port), "--num_workers", "1"], env=env)
            procs.append(litellm)
            try:
                asyncio.run(wait_ready(f"http://127.0.0.1:{ll_port}/health/liveliness", timeout=120))
                targets.append(("litellm", f"http://127.0.0.1:{ll_port}/v1/chat/completions", litellm.pid, AUTH, "bench"))
            except RuntimeError:
                print("litellm proxy did not start; skipped", file=sys.stderr)

        rounds: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(max(1, args.rounds)):
            for c in levels:
                for name, url, pid, headers, model in targets:
                    rounds.setdefault((name, c), []).append(measure(name, url, pid, c, args.seconds, headers, model))
        results = {key: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for key, rs in rounds.items()}
        mem = rss_mb(gateway.pid)
        stop(otel)  # its last spans are flushed as it stops
        procs.remove(otel)
        exported = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/count").read())
    finally:
        for p in reversed(procs):
            stop(p)

    print(f"\ngearshift start-up (process start to /health 200): {startup * 1000:.0f} ms; "
          f"resident memory after load: {mem:.0f} MB\n")
    header = f"{'target':<12} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} {'cpu/req ms':>10} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for c in levels:
        d = results[("direct", c)]
        for name, *_ in targets:
            r = results[(name, c)]
            added50 = r["p50"] - d["p50"] if name != "direct" else 0.0
            added99 = r["p99"] - d["p99"] if name != "direct" else 0.0
            print(f"{name:<12} {c:>4} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {added50:>10.2f} "
                  f"{added99:>10.2f} {r['cpu_ms']:>10.3f} {r['errors']:>6.0f}")
    def ratio(a: str, b: str, c: int, key: str, digits: int = 2) -> str:
        """Row a's figure over row b's: the median of the same-round ratios, with their range over rounds."""
        r = [x[key] / y[key] for x, y in zip(rounds[(a, c)], rounds[(b, c)], strict=True)]
        return f"{np.median(r):.{digits}f}x" + (f" [{min(r):.{digits}f}-{max(r):.{digits}f}]" if len(r) > 1 else "")

    names = [t[0] for t in targets]
    if "litellm" in names:
        for c in levels:
            g, lt = results[("gearshift", c)], results[("litellm", c)]
            print(f"concurrency {c}: gearshift/litellm throughput ratio {ratio('gearshift', 'litellm', c, 'rps', 1)}; "
                  f"added p50 gearshift {g['p50'] - results[('direct', c)]['p50']:.2f} ms vs litellm "
                  f"{lt['p50'] - results[('direct', c)]['p50']:.2f} ms")
    # aiohttp-pt is the yardstick; wire-pt, a pass-through on gearshift's own upstream client, leaves the
    # request path's own cost in its ratio.
    for pt_row in ("aiohttp-pt", "wire-pt"):
        for c in levels:
            g, pt = results[("gearshift", c)], results[(pt_row, c)]
            print(f"concurrency {c}: gearshift/{pt_row} throughput {ratio('gearshift', pt_row, c, 'rps')}; CPU per "
                  f"request {g['cpu_ms']:.3f} ms vs {pt['cpu_ms']:.3f} ms ({ratio('gearshift', pt_row, c, 'cpu_ms')})")
    for c in levels:
        g = results[("gearshift", c)]
        for row, path in (("gs-messages", "/v1/messages"), ("gs-responses", "/v1/responses")):
            m = results[(row, c)]
            print(f"concurrency {c}: {path} vs /v1/chat/completions through gearshift: p50 {m['p50'] - g['p50']:+.2f} "
                  f"ms, p99 {m['p99'] - g['p99']:+.2f} ms, CPU per request {m['cpu_ms'] - g['cpu_ms']:+.3f} ms")
    for c in levels:
        g, o = results[("gearshift", c)], results[("gs-otel", c)]
        print(f"concurrency {c}: OpenTelemetry on vs off: p50 {o['p50'] - g['p50']:+.2f} ms, p99 {o['p99'] - g['p99']:+.2f} "
              f"ms, CPU per request {o['cpu_ms'] - g['cpu_ms']:+.3f} ms ({ratio('gs-otel', 'gearshift', c, 'cpu_ms')}), "
              f"throughput {ratio('gs-otel', 'gearshift', c, 'rps')}")
    print(f"OpenTelemetry on: {exported['batches']} OTLP batches, {exported['bytes'] / 1e6:.1f} MB exported")
    if args.baseline_src:
        for c in levels:
            g, b = results[("gearshift", c)], results[("gs-baseline", c)]
            print(f"concurrency {c}: gearshift vs gs-baseline ({args.baseline_src}): p50 {g['p50'] - b['p50']:+.2f} ms, "
                  f"CPU per request {g['cpu_ms'] - b['cpu_ms']:+.3f} ms ({ratio('gearshift', 'gs-baseline', c, 'cpu_ms')}), "
                  f"throughput {ratio('gearshift', 'gs-baseline', c, 'rps')}")
    for c in levels:
        print(f"concurrency {c}: gearshift throughput is {ratio('gearshift', 'direct', c, 'rps')} direct")


if __name__ == "__main__":
    main()
