"""Work one step ahead in a daemon thread: results in order, errors at their item."""

import threading
import time

import pytest

from llmiqa.background import THREAD, in_parallel, one_ahead, working


def test_results_come_in_order_and_the_next_is_computed_meanwhile():
    started = []

    def slow_square(n: int) -> int:
        started.append(n)
        time.sleep(0.02)
        return n * n

    results = one_ahead(slow_square, range(4))
    assert next(results) == 0
    time.sleep(0.1)  # the caller is busy with item 0: item 1 is prepared meanwhile
    assert started[:2] == [0, 1] and len(started) <= 3  # at most one ahead, queue of one
    assert list(results) == [1, 4, 9]


def test_an_error_is_raised_to_the_caller_at_its_item():
    def fail_on_two(n: int) -> int:
        if n == 2:
            raise ValueError("bad item 2")
        return n

    results = one_ahead(fail_on_two, range(5))
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(ValueError, match="bad item 2"):
        next(results)


def test_the_thread_is_a_daemon_and_working_says_when_it_is_alive():
    release = threading.Event()
    results = one_ahead(lambda n: n if n == 0 or release.wait(5) else None, range(2))
    assert next(results) == 0  # the thread now waits inside item 1
    (thread,) = [t for t in threading.enumerate() if t.name == THREAD and t.is_alive()]
    assert thread.daemon and working()
    release.set()
    assert list(results) == [1]
    thread.join(5)
    assert not working()


def test_work_in_parallel_comes_back_in_order_from_several_daemon_threads():
    both = threading.Barrier(2, timeout=5)  # passes only while two items run at once
    seen = []

    def square(n: int) -> int:
        if n < 2:
            both.wait()
        seen.append(threading.current_thread())
        time.sleep(0.01 * (5 - n))  # later items finish first
        return n * n

    assert in_parallel(square, list(range(5)), threads=2) == [0, 1, 4, 9, 16]
    assert len(set(seen)) == 2 and all(t.daemon and t.name == THREAD for t in seen)
    assert in_parallel(square, [], threads=2) == []


def test_work_in_parallel_raises_the_first_error_once_every_thread_stopped():
    def fail_on_two(n: int) -> int:
        if n == 2:
            raise ValueError("bad item 2")
        return n

    with pytest.raises(ValueError, match="bad item 2"):
        in_parallel(fail_on_two, list(range(6)), threads=3)
    assert not working()
