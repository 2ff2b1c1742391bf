"""Where a grid's tasks run, behind one interface: ``map(fn, tasks,
progress=None)`` returns ``[fn(t) for t in tasks]`` in task order, and an
executor is a context manager that releases its workers on exit.

- `SerialExecutor`: this process, in order;
- `LocalExecutor(jobs)`: worker processes on this machine (every core by
  default), each with one BLAS thread;
- `DaskExecutor(address)`: a Dask distributed cluster (``pip install
  'rtrl-edge[dask]'``), checked on connection for workers and for the same
  rtrl_edge on every one of them;
- `executor(jobs, scheduler)` picks one.

`rtrl_edge.tuning` (``rtrl-edge tune``) and ``benchmarks/bench_extmarker.py``
run their grids on these; the results do not depend on which one ran them.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import urlsplit

__all__ = ["ByName", "DaskExecutor", "LocalExecutor", "SchedulerError", "SerialExecutor",
           "check_scheduler_url", "executor"]

CONNECT_TIMEOUT_S = 10.0


class SchedulerError(ConnectionError):
    """The Dask scheduler cannot be reached, or has no worker."""


class SerialExecutor:
    """Runs every task in this process, in order."""

    jobs = 1

    def map(self, fn: Callable, tasks: Sequence, progress=None) -> list:
        """``[fn(t) for t in tasks]``; ``progress(done, total)`` after each."""
        out = []
        for t in tasks:
            out.append(fn(t))
            if progress:
                progress(len(out), len(tasks))
        return out

    def describe(self) -> str:
        return "this process"

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _one_thread() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per worker process (the
    workers already use every core)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


class LocalExecutor(SerialExecutor):
    """Worker processes on this machine (`jobs`, default every core); a
    fresh pool per `map`, forked where the platform can, so that a caller's
    module-level caches reach the workers.  `fn` must be picklable (a
    module-level function) and so must the tasks and results."""

    def __init__(self, jobs: Optional[int] = None):
        jobs = (os.cpu_count() or 1) if jobs is None else jobs
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
        self.jobs = jobs

    def map(self, fn: Callable, tasks: Sequence, progress=None) -> list:
        if not tasks:
            return []
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        out: list = [None] * len(tasks)
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(tasks)), mp_context=ctx,
                                   initializer=_one_thread)
        try:
            index = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            for done, future in enumerate(as_completed(index), 1):
                out[index[future]] = future.result()
                if progress:
                    progress(done, len(tasks))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return out

    def describe(self) -> str:
        return f"{self.jobs} local process{'es' if self.jobs > 1 else ''}"


def check_scheduler_url(url: str) -> str:
    """`url` if it reads tcp://HOST:PORT, else ValueError saying so."""
    expected = f"expected tcp://HOST:PORT, got {url!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme != "tcp" or not parts.hostname or port is None or port == 0 \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(expected)
    return url


def _version() -> str:
    """rtrl_edge's version where this runs (a Dask worker's or scheduler's)."""
    from . import __version__
    return __version__


class ByName(NamedTuple):
    """A function named by its module and name, imported where it is called,
    after `paths` are put on sys.path: how a script's own function reaches
    Dask workers (only rtrl_edge must be importable by the scheduler and the
    workers; the script's folder only by the workers)."""
    module: str
    name: str
    paths: Tuple[str, ...] = ()

    def __call__(self, task):
        import importlib
        import sys
        for folder in reversed(self.paths):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        return getattr(importlib.import_module(self.module), self.name)(task)


class DaskExecutor(SerialExecutor):
    """The tasks on a Dask distributed cluster at `address` (tcp://HOST:PORT).

    Waits up to `timeout` seconds for the scheduler and at least one worker
    (`SchedulerError` otherwise).  `fn` and the tasks are pickled: the
    scheduler and the workers must be able to import `fn` (rtrl_edge's
    functions, where rtrl_edge is installed; a script's own through
    `ByName`).  ImportError, naming the extra to install, without Dask's
    `distributed`.
    """

    def __init__(self, address: str, *, timeout: Optional[float] = None):
        check_scheduler_url(address)
        try:
            from distributed import Client
        except ImportError:
            raise ImportError("--scheduler needs Dask's distributed: pip install "
                              "'rtrl-edge[dask]'") from None
        timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
        self.address = address
        self.client = None
        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
            self.client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            self.close()
            what = str(exc).split("\n")[0] or type(exc).__name__
            raise SchedulerError(f"cannot use the Dask scheduler at {address} within "
                                 f"{timeout:g} s: {what}") from None
        try:
            self._check_versions()
        except BaseException:
            self.close()
            raise

    def _check_versions(self) -> None:
        """The scheduler (which unpickles the tasks) and every worker import
        this version of rtrl_edge, else SchedulerError: a worker that cannot
        unpickle a task dies and the run would wait for it forever."""
        from . import __version__
        try:
            found = {"the scheduler": self.client.run_on_scheduler(_version)}
        except Exception as exc:   # noqa: BLE001 - whatever the scheduler's import raised
            found = {"the scheduler": exc}
        found.update((f"worker {w}", v) for w, v in
                     self.client.run(_version, on_error="return").items())
        for who, v in found.items():
            if v != __version__:
                what = str(v) if isinstance(v, BaseException) else f"it has rtrl_edge {v}"
                raise SchedulerError(f"the Dask cluster at {self.address} cannot run these "
                                     f"tasks: {who}: {what} (install rtrl_edge {__version__}, "
                                     f"the same build as here, there)")

    @property
    def jobs(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def map(self, fn: Callable, tasks: Sequence, progress=None) -> list:
        if not tasks:
            return []
        from distributed import as_completed as completed
        futures = self.client.map(fn, list(tasks), pure=False)
        try:
            for done, future in enumerate(completed(futures, loop=self.client.loop), 1):
                if future.status == "error":
                    future.result()                  # raises the task's exception
                if progress:
                    progress(done, len(tasks))
            return self.client.gather(futures)
        finally:
            self.client.cancel(futures)

    def describe(self) -> str:
        workers = len(self.client.scheduler_info().get("workers", {}))
        return f"Dask at {self.address} ({workers} worker{'s' if workers != 1 else ''})"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def executor(jobs: Optional[int] = None, scheduler: Optional[str] = None, **dask_options):
    """`DaskExecutor(scheduler)` if a scheduler is given, else
    `LocalExecutor(jobs)` (every core by default), `SerialExecutor` for one job."""
    if scheduler:
        return DaskExecutor(scheduler, **dask_options)
    local = LocalExecutor(jobs)
    return SerialExecutor() if local.jobs == 1 else local


