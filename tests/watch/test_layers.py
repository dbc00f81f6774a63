"""The watch reads traces through the store's view, never through the gateway (imports run downward)."""

from __future__ import annotations

import subprocess
import sys


def test_watch_windows_do_not_import_the_gateway() -> None:
    code = ("import sys, gearshift.watch.windows, gearshift.watch.drift; "
            "print(sorted(m for m in sys.modules if m.startswith('gearshift.gateway')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
