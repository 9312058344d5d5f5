"""The ordered Socket.IO client's dispatcher: one thread, submission order, survives a fault."""

from __future__ import annotations

import threading

import pytest

from bridge.engines.gpt_translator.sio_client import SerialDispatcher


def test_work_runs_in_order_on_one_thread_and_a_fault_does_not_stop_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = SerialDispatcher("test-dispatch")
    seen: list[int] = []
    threads: set[str] = set()
    done = threading.Event()

    def work(i: int) -> None:
        threads.add(threading.current_thread().name)
        if i == 3:
            raise RuntimeError("a handler fault")
        seen.append(i)

    for i in range(200):
        dispatcher.submit(lambda i=i: work(i))  # type: ignore[misc]
    dispatcher.submit(done.set)
    dispatcher.stop()
    assert done.wait(5)
    dispatcher.join(5)
    assert seen == [i for i in range(200) if i != 3]
    assert threads == {"test-dispatch"}
    assert "Socket.IO event handler failed" in caplog.text
