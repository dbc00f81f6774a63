"""Key lookup per request, in microseconds (median of repeats): `Gateway.authenticate` with a config key,
a virtual key found in the replica's cache, and a virtual key read from a SQLite store (a cache miss:
the HMAC, a thread hop and one indexed read). The gateway is built in-process, its store a temporary file.

    python benchmarks/keys.py [--requests 2000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import make_mocked_request

from gearshift import plan
from gearshift.gateway.app import Gateway
from gearshift.gateway.keys import create_key


async def per_request(gw: Gateway, token: str, n: int, repeat: int, clear: bool) -> float:
    """Median over `repeat` runs of the mean microseconds of one authenticate."""
    request = make_mocked_request("POST", "/v1/chat/completions", headers={"Authorization": f"Bearer {token}"})
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            if clear and gw.keyring is not None:
                gw.keyring.clear()
            await gw.authenticate(request)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def keyed_gateway(folder: Path, teams: dict[str, Any] | None = None,
                  key: dict[str, Any] | None = None) -> tuple[Gateway, str]:
    """An in-process gateway on a SQLite store in `folder`, with ten config keys (`k-config-0000`...) and
    one virtual key made from `key` (default: named "virtual", no limits); the gateway and that key."""
    os.environ["GS_BENCH_KEY_SECRET"] = "b" * 48
    data = {"models": {"small": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                 "price": {"input": 1, "output": 2}, "rank": 1}},
            "routers": {"auto": {"kind": "fixed", "model": "small"}},
            "teams": teams or {},
            "client_keys": [{"name": f"config-{i}", "key": f"k-config-{i:04d}"} for i in range(10)],
            "store": {"url": f"sqlite:///{folder / 'keys.db'}"},
            "server": {"key_secret_env": "GS_BENCH_KEY_SECRET"}}
    p = plan.parse(data, base_dir=folder)
    gw = Gateway(p)
    secret = plan.key_secret(p.config)
    assert secret is not None
    token, _ = create_key(gw.store, p.config, secret, key or {"name": "virtual"}, "bench")
    return gw, token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    gw, token = keyed_gateway(Path(tempfile.mkdtemp(prefix="gearshift-keys-")))

    async def run() -> None:
        n, r = args.requests, args.repeat
        config = await per_request(gw, "k-config-0009", n, r, clear=False)
        cached = await per_request(gw, token, n, r, clear=False)
        miss = await per_request(gw, token, max(1, n // 10), r, clear=True)
        print(f"authenticate, 10 config keys:            {config:7.1f} us per request")
        print(f"virtual key, cached (HMAC + dict):       {cached:7.1f} us per request  (+{cached - config:.1f} us)")
        print(f"virtual key, cache miss (SQLite read):   {miss:7.1f} us per request  "
              f"(once per key per server.key_cache_seconds)")

    asyncio.run(run())
    gw.store.close()


if __name__ == "__main__":
    main()
