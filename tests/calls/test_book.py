"""The in-process call book: it remembers the calls that ended (a voice webhook for one is a
replay), boundedly, and a leg takes one stream."""

from __future__ import annotations

from functools import partial

import pytest

from bridge.calls import book as book_module
from bridge.calls.book import MemoryCallBook
from bridge.calls.call import Call
from bridge.ops.metrics import Metrics


def make_call(sid: str, metrics: Metrics) -> Call:
    return Call(
        caller_sid=sid,
        caller_number="+34911222333",
        dialled_number="+15550002222",
        caller_language="es",
        agent_language="en",
        metrics=metrics,
    )


def end(book: MemoryCallBook, call: Call) -> None:
    """What a teardown does to the book: mark the call ended, then forget it."""
    assert call.mark_ended("caller_hung_up")
    book.forget(call)


def test_an_ended_call_is_remembered_and_a_dropped_one_is_not() -> None:
    metrics, book = Metrics(), MemoryCallBook()
    call, is_new = book.register("CA1", lambda: make_call("CA1", metrics), 10)
    assert call is not None and is_new
    assert not book.ended_recently("CA1")  # live
    end(book, call)
    assert book.find("CA1") is None and book.ended_recently("CA1")
    # A call unregistered without ending (another instance admitted it) is not "ended".
    other, _ = book.register("CA2", lambda: make_call("CA2", metrics), 10)
    assert other is not None
    book.unregister(other)
    assert not book.ended_recently("CA2")


def test_the_memory_of_ended_calls_is_bounded_oldest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(book_module, "REMEMBER_ENDED_MAX", 3)
    metrics, book = Metrics(), MemoryCallBook()
    for n in range(5):
        call, _ = book.register(f"CA{n}", partial(make_call, f"CA{n}", metrics), 10)
        assert call is not None
        end(book, call)
    assert [book.ended_recently(f"CA{n}") for n in range(5)] == [False, False, True, True, True]


def test_the_memory_of_ended_calls_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics, book = Metrics(), MemoryCallBook()
    call, _ = book.register("CA1", lambda: make_call("CA1", metrics), 10)
    assert call is not None
    end(book, call)
    assert book.ended_recently("CA1")
    monkeypatch.setattr(book_module, "REMEMBER_ENDED_S", 0.0)
    assert not book.ended_recently("CA1")
