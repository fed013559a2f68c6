"""Independent jobs (one task in one model, say) spread over processes, one per core.

On this kind of model a second process gains more than a second thread on the same small
matmuls, so each worker gets `cores // jobs` threads. Workers are spawned (never forked: torch
and numba thread pools do not survive a fork) and open their models from disk themselves.
"""

from __future__ import annotations

import os


def default_jobs(n: int, jobs: int | None) -> int:
    """How many of n jobs run at once: `jobs`, else one per core, never more than n."""
    return max(1, min(n, jobs or os.cpu_count() or 1))


def run_jobs(args: list, jobs: int, local, remote, started=lambda a: None):
    """Yield each job's result as it finishes.

    With `jobs` 1, `local(a)` runs each job in this process (on models already loaded). Else
    `remote(a, threads)`, a module-level function, runs it in one of `jobs` spawned workers.
    `started(a)` is called as each job begins: a job is submitted only when a worker is free.
    """
    if jobs == 1:
        for a in args:
            started(a)
            yield local(a)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    threads = max(1, (os.cpu_count() or 1) // jobs)
    queue = list(reversed(args))
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        running = {}

        def submit():
            a = queue.pop()
            started(a)
            running[pool.submit(remote, a, threads)] = a

        while queue and len(running) < jobs:
            submit()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                del running[f]
                if queue:
                    submit()
                yield f.result()
