"""Where a sweep's tasks run: worker processes on this machine (`LocalBackend`, a spawn
ProcessPoolExecutor) or Ray tasks (`RayBackend`, on a local Ray or a cluster). Both take a task
function of hidebench.app.sweep_tasks and its task, and answer with handles to wait on.
"""
from __future__ import annotations

import logging
import os

from hidebench.app.sweep_tasks import execute_run, exit_with_parent
from hidebench.types import HidebenchError, one_line

BACKENDS = ("local", "ray")


def open_backend(backend: str, workers: int, threads: int, address: str | None, fresh: bool):
    """The backend a sweep runs on (its arguments checked by the driver)."""
    return RayBackend(workers, threads, address, fresh) if backend == "ray" else LocalBackend(workers, fresh)


class LocalBackend:
    """Worker processes (spawn) from concurrent.futures, kept between tasks, or with fresh a new
    process for every run (challenge generations keep sharing long-lived ones); workers=0 runs
    tasks in this process."""

    name = "local"

    def __init__(self, workers: int, fresh: bool = False):
        self.workers, self.reuse = workers, not fresh
        self.capacity = max(workers, 1)
        self.pool = self.gen_pool = None
        if workers:
            self._start()

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        spawn = multiprocessing.get_context("spawn")
        init = {"initializer": exit_with_parent, "initargs": (os.getpid(),)}
        self.pool = ProcessPoolExecutor(self.workers, mp_context=spawn, max_tasks_per_child=None if self.reuse else 1,
                                        **init)
        self.gen_pool = self.pool if self.reuse else ProcessPoolExecutor(self.workers, mp_context=spawn, **init)

    def submit(self, fn, task):
        from concurrent.futures import Future

        if self.pool is not None:
            return (self.pool if fn is execute_run else self.gen_pool).submit(fn, task)
        fut = Future()
        try:
            fut.set_result(fn(task))
        except Exception as e:           # a KeyboardInterrupt goes through to the driver
            fut.set_exception(e)
        return fut

    def wait(self, handles, timeout):
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(handles, timeout=timeout, return_when=FIRST_COMPLETED).done)

    def result(self, handle):
        return handle.result()

    def crashed(self, exc) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        return isinstance(exc, BrokenProcessPool)

    def _pools(self):
        return [p for p in dict.fromkeys((self.pool, self.gen_pool)) if p is not None]

    def restart(self):
        for pool in self._pools():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.pool is not None:
            self._start()

    def close(self, handles=(), cancel: bool = False):
        for pool in self._pools():
            if cancel:
                procs = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for p in procs:            # the pool's own worker processes, by their handles
                    if p.is_alive():
                        p.terminate()      # SIGTERM: the worker exits cleanly (exit_with_parent)
                for p in procs:
                    p.join(10)
                    if p.is_alive():
                        p.kill()
            # joins the pool's manager thread, which releases its queues' semaphores (no
            # leaked-semaphore warning from the resource tracker at exit)
            pool.shutdown(wait=True)


class RayBackend:
    """Each task is a Ray task (`ray.remote`), on a local Ray started for the sweep or on the
    cluster at `address`; Ray schedules them by the CPUs each asks for (the threads per run)."""

    name = "ray"

    def __init__(self, workers: int, threads: int, address: str | None, fresh: bool = False):
        try:
            import ray
        except ImportError:
            raise HidebenchError("--backend ray needs Ray: pip install 'hidebench[ray]'") from None
        self.ray, self.threads, self.capacity, self.reuse = ray, threads, None, not fresh
        self.started = not ray.is_initialized()
        if self.started:
            try:
                quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
                if address:
                    ray.init(address=address, **quiet)
                else:
                    # worker_niceness 0: Ray starts its workers at niceness 15, where any other job on
                    # the machine starves them
                    ray.init(address="local", num_cpus=max(workers, 1) * threads, include_dashboard=False,
                             object_store_memory=200 * 2 ** 20, _system_config={"worker_niceness": 0}, **quiet)
            except Exception as e:
                raise HidebenchError(f"could not {'connect to Ray at ' + address if address else 'start a local Ray'}: "
                                     f"{one_line(e, with_type=True)}") from None
        self._remote = {}

    def submit(self, fn, task):
        if fn not in self._remote:
            fresh = fn is execute_run and not self.reuse       # a fresh worker process per run
            self._remote[fn] = self.ray.remote(num_cpus=self.threads, max_calls=1 if fresh else 0)(fn)
        return self._remote[fn].remote(task)

    def wait(self, handles, timeout):
        done, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        return done

    def result(self, handle):
        return self.ray.get(handle)

    def crashed(self, exc) -> bool:
        return False

    def restart(self):
        pass

    def close(self, handles=(), cancel: bool = False):
        if cancel:
            for h in handles:
                try:
                    self.ray.cancel(h, force=True)
                except Exception:
                    pass
        if self.started:
            self.ray.shutdown()
