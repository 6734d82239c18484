"""Run independent study tasks in up to ``workers`` processes (spawned, one torch thread each).

Each worker gets the shared read-only context once (``init`` is called with ``context`` in the
worker and must store it, e.g. in a module global); tasks are then mapped in order. With
``workers == 1`` everything runs in this process, which is what ``--quick`` and the tests use.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable


def _worker_init(init: Callable[[Any], None], context: Any) -> None:
    import torch
    torch.set_num_threads(1)
    init(context)


def run_tasks(fn: Callable[[Any], Any], tasks: Iterable[Any], *, workers: int,
              init: Callable[[Any], None], context: Any, label: str = "tasks") -> list[Any]:
    """``[fn(t) for t in tasks]`` (results in task order), across ``workers`` processes; prints
    a progress line per finished task to stderr."""
    tasks = list(tasks)
    start = time.perf_counter()

    def progress(i: int) -> None:
        print(f"[{label}] {i}/{len(tasks)} done, {time.perf_counter() - start:.0f}s",
              file=sys.stderr, flush=True)

    if workers <= 1:
        _worker_init(init, context)
        out = []
        for i, t in enumerate(tasks, 1):
            out.append(fn(t))
            progress(i)
        return out
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(init, context)) as pool:
        out = []
        for i, result in enumerate(pool.map(fn, tasks), 1):
            out.append(result)
            progress(i)
        return out
