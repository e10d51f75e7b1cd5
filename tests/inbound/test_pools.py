"""Fork-safe thread pools: one per process, made on first use and again after a fork."""

from __future__ import annotations

import os
import threading
import time

import pytest

from receiver.inbound.pools import BACKGROUND_NICENESS, ForkSafePool, lower_thread_priority


def test_the_pool_is_made_once_on_first_use_and_named() -> None:
    made: list[int] = []
    pool = ForkSafePool(2, name="probe", on_new=lambda: made.append(1))
    assert made == []  # nothing until it is used
    first = pool.executor
    assert pool.executor is first
    assert made == [1]
    name = first.submit(lambda: threading.current_thread().name).result()
    assert name.startswith("probe")
    pool.shutdown()


def test_initializer_runs_on_the_pool_thread() -> None:
    seen: list[str] = []
    pool = ForkSafePool(1, name="init", initializer=lambda: seen.append("ran"))
    pool.executor.submit(lambda: None).result()
    assert seen == ["ran"]
    pool.shutdown()


def test_shutdown_without_wait_cancels_queued_work_and_the_next_use_makes_a_new_pool() -> None:
    made: list[int] = []
    pool = ForkSafePool(1, name="stop", on_new=lambda: made.append(1))
    old = pool.executor
    gate = threading.Event()
    running = old.submit(gate.wait, 5)
    queued = old.submit(lambda: "never")
    pool.shutdown(wait=False)
    assert queued.cancelled()
    gate.set()
    assert running.result() is True
    new = pool.executor
    assert new is not old
    assert new.submit(lambda: "again").result() == "again"
    assert made == [1, 1]
    pool.shutdown()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="needs per-thread nice values")
def test_lower_thread_priority_lowers_only_the_pool_thread() -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pool = ForkSafePool(1, name="nice", initializer=lower_thread_priority)
    niceness = pool.executor.submit(
        lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    ).result()
    pool.shutdown()
    assert niceness == max(before, BACKGROUND_NICENESS)
    # The caller's own thread keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_every_background_pool_uses_the_one_priority_rule() -> None:
    from receiver.inbound import derivatives, playable, texts

    for module in (derivatives, playable, texts):
        assert module.lower_thread_priority is lower_thread_priority
        assert not hasattr(module, "_lower_thread_priority")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_pool_of_its_own() -> None:
    made: list[int] = []
    pool = ForkSafePool(2, name="fork", on_new=lambda: made.append(os.getpid()))
    parent = pool.executor
    assert parent.submit(lambda: 1).result() == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        ok = False
        try:
            child = pool.executor
            ok = (
                child is not parent
                and child.submit(lambda: 2).result(timeout=5) == 2
                and made[-1] == os.getpid()
            )
            pool.shutdown()
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    # The parent's pool is untouched by the child.
    assert pool.executor is parent
    assert made == [os.getpid()]
    started = time.monotonic()
    assert parent.submit(lambda: 3).result(timeout=5) == 3
    assert time.monotonic() - started < 5
    pool.shutdown()
