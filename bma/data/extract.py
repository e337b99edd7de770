"""Feature extraction in parallel: a list of chunks mapped through a function by a process pool, with a progress bar.

Determinism: the chunks are fixed by the caller (``SOUND_BATCH`` clips each, whatever the worker count), every
chunk is computed with one torch thread (in a worker, or in this process when there is one worker), and each
result goes to its chunk's rows. So 1 worker and 8 workers give bit-identical arrays (tests/data/test_cache_files.py).

Workers are spawned, not forked: the driver calls this from a data thread while Ray starts, and forking a
multi-threaded process is unsafe. A spawned worker imports torch and torchaudio (a few seconds), so a small
split runs in this process: ``auto_workers`` gives one worker below ``PARALLEL_MIN_CHUNKS`` chunks.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Sequence

PARALLEL_MIN_CHUNKS = 32  # 8,192 clips at 256 a chunk: below that, spawning workers costs more than it saves
WORKERS_ENV = "BMA_FEATURE_WORKERS"


def auto_workers(n_chunks: int) -> int:
    """$BMA_FEATURE_WORKERS when set, else the CPUs this process may use, for at least PARALLEL_MIN_CHUNKS chunks."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        return max(1, int(raw))
    if n_chunks < PARALLEL_MIN_CHUNKS:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, n_chunks))


@contextlib.contextmanager
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _progress(total: int, desc: str):
    """A rich progress bar on stderr when it is a terminal; nothing otherwise (logs, CI, Ray workers)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    return progress, progress.add_task(desc, total=total)


def map_chunks(fn: Callable, chunks: Sequence, workers: int, desc: str) -> Iterator[tuple[int, object]]:
    """Yield (chunk index, fn(chunk)) for every chunk, with ``workers`` processes (1: in this process). Results
    may come out of order; the index says where each belongs. At most 2 x workers chunks are in flight, so
    finished results do not pile up in memory."""
    progress, task = _progress(len(chunks), desc)
    with progress:
        if workers <= 1 or len(chunks) <= 1:
            with one_torch_thread():
                for i, chunk in enumerate(chunks):
                    yield i, fn(chunk)
                    progress.advance(task)
            return
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            pending, next_chunk = {}, 0
            while next_chunk < len(chunks) or pending:
                while next_chunk < len(chunks) and len(pending) < 2 * workers:
                    pending[pool.submit(fn, chunks[next_chunk])] = next_chunk
                    next_chunk += 1
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
                    progress.advance(task)


__all__ = ["PARALLEL_MIN_CHUNKS", "WORKERS_ENV", "auto_workers", "map_chunks", "one_torch_thread"]
