"""receiver.index.writelock: one SQLite writer at a time across processes."""

from __future__ import annotations


def test_writer_lock_queues_writers_of_other_processes(tmp_path: object) -> None:
    import multiprocessing
    import time
    from pathlib import Path

    from receiver.index.writelock import WriterLock

    assert isinstance(tmp_path, Path)
    lock = WriterLock(str(tmp_path / "index.db"))
    ctx = multiprocessing.get_context("fork")
    took = ctx.Queue()

    def child() -> None:
        started = time.monotonic()
        with lock.hold():  # the same object, inherited: it must open its own file
            took.put(time.monotonic() - started)

    with lock.hold():
        proc = ctx.Process(target=child)
        proc.start()
        time.sleep(0.5)
        assert took.empty()  # still waiting for the parent's write to finish
    assert took.get(timeout=10) >= 0.4
    proc.join(10)
    assert proc.exitcode == 0
    assert (tmp_path / "index.db-writer.lock").exists()
    lock.close()
