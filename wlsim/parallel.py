"""One way to run independent simulation tasks: local worker processes or Ray tasks.

A task is ``fn(data, arg)``: ``data`` is one of a few large shared objects (a trace table)
named by a key, ``arg`` is small (a policy spec, a sweep cell). The executor sends each
shared object to a worker once, not once per task:

- :class:`LocalExecutor` (``jobs`` processes, what ``wl sim compare -j`` always did): the
  shared objects reach the workers through the pool's initializer (with fork, copy-on-write);
  ``jobs == 1`` runs the tasks in this process.
- :class:`RayExecutor` (``--ray``: a local Ray started here; ``--ray ADDRESS``: join a
  cluster, e.g. ``ray://head:10001`` or ``auto``): each shared object is put in Ray's
  object store once and every task gets its reference; the tasks run wherever Ray places them.

``run`` yields ``(task index, result)`` as tasks finish, in any order. ``ray`` is imported
only by RayExecutor, so nothing else pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Self

TaskFn = Callable[[Any, Any], Any]
LOCAL_RAY = "local"   # the value of a bare ``--ray``: start a Ray instance on this machine


class ExecutorError(RuntimeError):
    """The executor could not start (e.g. Ray missing or its cluster unreachable)."""


class Executor:
    """Runs ``fn(shared[key], arg)`` for every ``(key, arg)`` task; see the module docstring."""

    workers: int = 1
    name: str = "local"

    def run(self, fn: TaskFn, tasks: Sequence[tuple[str, Any]],
            shared: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (a Ray instance started here is shut down)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------- local
# A local worker receives the shared objects once (initializer), then runs tasks by key.
_worker_shared: Mapping[str, Any] = {}


def _init_local_worker(shared: Mapping[str, Any]) -> None:
    global _worker_shared
    _worker_shared = shared


def _run_local_task(fn: TaskFn, key: str, arg: Any) -> Any:
    return fn(_worker_shared[key], arg)


class LocalExecutor(Executor):
    """``jobs`` worker processes on this machine (0 = one per core); 1 = in this process."""

    def __init__(self, jobs: int = 0) -> None:
        self.workers = jobs if jobs > 0 else (os.cpu_count() or 1)
        self.name = f"local x{self.workers}"

    def run(self, fn: TaskFn, tasks: Sequence[tuple[str, Any]],
            shared: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
        if self.workers == 1 or len(tasks) <= 1:
            for i, (key, arg) in enumerate(tasks):
                yield i, fn(shared[key], arg)
            return
        from wlsim.compare import _mp_context  # one rule for fork vs forkserver/spawn

        workers = min(self.workers, len(tasks))
        with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(),
                                 initializer=_init_local_worker, initargs=(dict(shared),)) as pool:
            pending: dict[Future, int] = {
                pool.submit(_run_local_task, fn, key, arg): i for i, (key, arg) in enumerate(tasks)}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield pending.pop(fut), fut.result()
            except BaseException:
                # A failed task or Ctrl-C: drop the queued tasks instead of waiting for them.
                pool.shutdown(wait=False, cancel_futures=True)
                raise


# --------------------------------------------------------------------------------- ray

def _ray_task(fn: TaskFn, data: Any, arg: Any) -> Any:
    return fn(data, arg)


class RayExecutor(Executor):
    """Ray tasks: ``address`` None or ``"local"`` starts Ray here with ``num_cpus`` CPUs
    (default: all cores); any other address joins that cluster (``ray.init(address=...)``).

    Joining Ray installs Ray's native crash-signal handlers in this process, over wasmtime's:
    a wasm trap *in this process* afterwards (e.g. a ``wasm:`` policy run here rather than in
    a Ray worker) would end the process instead of being reported. Cells run in Ray's worker
    processes, which is where wasm policies run under ``--ray``."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--ray needs Ray: pip install 'wl[ray]'") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        local = address in (None, "", LOCAL_RAY)
        if self._started_here:
            # Workers import wl as installed (pip install -e . puts the working tree there).
            try:
                if local:
                    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR")
                else:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except Exception as e:  # noqa: BLE001 (ray raises plain Exception on a start-up timeout)
                raise ExecutorError(f"could not {'start' if local else 'join'} Ray"
                                    f"{'' if local else f' at {address}'}: {e}") from None
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self.name = f"ray x{self.workers}" + ("" if local else f" at {address}")
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)

    def run(self, fn: TaskFn, tasks: Sequence[tuple[str, Any]],
            shared: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        refs = {key: ray.put(shared[key]) for key in {k for k, _ in tasks}}  # once per object
        pending = {self._remote.remote(fn, refs[key], arg): i for i, (key, arg) in enumerate(tasks)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        raise e.as_instanceof_cause() from None  # the task's own exception
                    yield i, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(jobs: int = 0, ray: str | None = None) -> Executor:
    """The executor the CLI options ask for: ``ray`` set (``"local"`` or an address) -> Ray,
    else ``jobs`` local processes (0 = one per core)."""
    if ray is not None:
        return RayExecutor(ray, num_cpus=jobs if jobs > 0 else None)
    return LocalExecutor(jobs)
