"""Work one step ahead in a background thread: decode the next chunk of images, or prepare
the next batch, while the current one is used; and work spread over several threads
(decoding and hashing release the GIL, so a chunk decodes on several cores).

Daemon threads, so that Ctrl-C stops the process at once: the interpreter does not wait
for a decode or a processor call in progress (a ThreadPoolExecutor would be joined at
exit). The interpreter's own exit can abort while that thread is inside torch's C++ code
("terminate called without an active exception", exit status 134), so the command line
leaves with os._exit after Ctrl-C while one is `working`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

THREAD = "llmiqa-ahead"
Item = TypeVar("Item")
Result = TypeVar("Result")


def one_ahead(work: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
    """work(item) for each item, in order, computing the next while the caller uses this one.

    An exception raised by `work` is raised to the caller at its item.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    done = object()

    def produce() -> None:
        for item in items:
            try:
                handoff.put((work(item), None))
            except BaseException as error:  # handed over, raised in the caller's thread
                handoff.put((None, error))
                return
        handoff.put((done, None))

    threading.Thread(target=produce, daemon=True, name=THREAD).start()
    while True:
        result, error = handoff.get()
        if error is not None:
            raise error
        if result is done:
            return
        yield result


def in_parallel(
    work: Callable[[Item], Result], items: Sequence[Item], threads: int
) -> list[Result]:
    """[work(item) for item in items], in order, on up to `threads` daemon threads; the
    first exception `work` raises is raised here once every thread has stopped."""
    if threads <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    results: list = [None] * len(items)
    errors: list[BaseException] = []
    indices = iter(range(len(items)))
    lock = threading.Lock()

    def run() -> None:
        while not errors:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            try:
                results[index] = work(items[index])
            except BaseException as error:  # raised in the caller's thread
                errors.append(error)

    pool = [threading.Thread(target=run, daemon=True, name=THREAD) for _ in range(threads)]
    for thread in pool[: len(items)]:
        thread.start()
    for thread in pool[: len(items)]:
        thread.join()
    if errors:
        raise errors[0]
    return results


def working() -> bool:
    """Whether a thread of `one_ahead` is still alive (abandoned by an interrupted caller)."""
    return any(thread.name == THREAD and thread.is_alive() for thread in threading.enumerate())
