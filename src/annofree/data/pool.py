"""Ordered map over a pool of worker processes, for the data tools that work shard by shard.

``map_in_processes(fn, items, workers)`` yields ``fn(item)`` in the order of ``items``; with one worker (or one
item) it runs in this process. On an error or Ctrl-C the items being worked on finish and no other starts, so a
tool that writes one file per item never leaves one half written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_in_processes(fn: Callable[[Item], Result], items: Sequence[Item], workers: int) -> Iterator[Result]:
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    executor = ProcessPoolExecutor(max_workers=min(workers, len(items)))
    try:
        yield from executor.map(fn, items)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
