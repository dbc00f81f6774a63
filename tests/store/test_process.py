"""The trace writer process: what the gateway hands it is written, counted, and not lost when either side dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from gearshift.store import open_store
from gearshift.store.process import ProcessWriter, pack, unpack
from gearshift.trace import Call
from tests.support.traces import trace


def _wait(cond: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def _writer(tmp_path: Path, **kw: object) -> ProcessWriter:
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    return ProcessWriter(open_store(url), url, str(tmp_path), None, flush_interval=0.05, **kw)  # type: ignore[arg-type]


def test_a_line_unpacks_to_the_trace_packed_and_a_line_of_another_width_is_refused() -> None:
    t = trace(created=1000.0, client="c", revision=2, cache="miss")
    t.calls.append(Call(model="large", role="shadow", input_tokens=5, usage_estimated=True, truncated=True, started=9.5))
    assert unpack(pack(t)) == t
    values, calls = orjson.loads(pack(t))
    with pytest.raises(TypeError):  # what the child counts as a line that is not a trace
        unpack(orjson.dumps((values[:-1], calls)))


def test_traces_put_on_the_loop_are_written_by_the_child_with_their_later_revision(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    sent = [trace(created=1000.0 + i) for i in range(300)]

    async def serve() -> None:
        for t in sent:
            w.put(t)
        await asyncio.sleep(0.1)
        sent[0].calls.append(Call(model="large", role="shadow", cost_usd=0.5, response="ref"))  # its shadow pair
        sent[0].revision += 1
        w.put(sent[0])
        await asyncio.sleep(0.1)  # the loop lives on, as a gateway's does, for the next hand-over

    asyncio.run(serve())
    assert w._child.pid != os.getpid()  # noqa: SLF001 - the writes happen in another process
    _wait(lambda: w.pending() == 0 and w.updated == 1)
    assert (w.written, w.updated, w.failed, w.dropped) == (300, 1, 0, 0)
    w.close()
    rows = {r["id"]: r for r in w.store.traces()}
    assert set(rows) == {t.id for t in sent}
    assert [c["role"] for c in rows[sent[0].id]["calls"]] == ["primary", "shadow"]
    assert rows[sent[1].id]["prompt"] == "What is 2+2?" and rows[sent[1].id]["calls"][0]["cost_usd"] == 0.0001


def test_without_an_event_loop_each_trace_is_handed_over_at_once(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    for _ in range(5):
        w.put(trace())
    _wait(lambda: w.written == 5)
    w.close()
    assert w.store.count() == 5 and w.pending() == 0
    other = os.open(os.devnull, os.O_RDONLY)  # may take the pipe's old number
    try:
        w.close()  # a second close (a test drains, then the gateway stops) leaves other files alone
        os.fstat(other)
        w.put(trace())  # after close: counted, not written
        assert w.dropped == 1 and w.store.count() == 5
    finally:
        os.close(other)


def test_a_child_that_dies_is_replaced_by_a_thread_and_its_loss_is_counted(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    w = _writer(tmp_path)
    for _ in range(10):
        w.put(trace())
    _wait(lambda: w.written == 10)
    w._child.kill()  # noqa: SLF001 - the OOM killer, say
    w._child.wait()  # noqa: SLF001
    for _ in range(5):
        w.put(trace())  # the first finds the pipe closed: from then on a thread writes
    _wait(lambda: w.written == 10 + 4 and w.pending() == 0)
    w.close()
    assert "trace writer process stopped" in caplog.text
    assert w.failed == 1 and w.store.count() == 14  # the one in the dead pipe is lost, and counted


def test_a_gateway_killed_outright_loses_none_of_the_traces_it_handed_over(tmp_path: Path) -> None:
    # The writer's owner is killed with SIGKILL: the kernel closes the pipe, and the child writes what it has.
    script = (
        "import sys, time\n"
        "from gearshift.store import open_store\n"
        "from gearshift.store.process import ProcessWriter\n"
        "from tests.support.traces import trace\n"
        f"url = 'sqlite:///{tmp_path / 'traces.db'}'\n"
        f"w = ProcessWriter(open_store(url), url, {str(tmp_path)!r}, None, flush_interval=5.0)\n"
        "for _ in range(200):\n"
        "    w.put(trace())\n"
        "print(w._child.pid, flush=True)\n"
        "time.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    assert owner.stdout is not None
    child = int(owner.stdout.readline())
    owner.send_signal(signal.SIGKILL)  # before the child's first flush (5 s): nothing is written yet
    owner.wait()
    _wait(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2])
    assert open_store(f"sqlite:///{tmp_path / 'traces.db'}").count() == 200
