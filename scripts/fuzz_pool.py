"""Forked worker processes that run fuzz trials one at a time under a time and a memory limit.

Why a pool of forked workers: a reader that hangs, exhausts memory or kills the interpreter must be
counted as an outcome, not end the run. Forking after the corpus is loaded lets every worker share
it without pickling, and a worker is reused across trials (importing onnx costs about a second);
only a worker that overran its time, ran out of memory or died is replaced.
"""
from __future__ import annotations

import multiprocessing
import resource
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

LOADED, NAMED_ERROR, OTHER_EXCEPTION, HANG, MEMORY, CRASH = (
    "loaded", "named_error", "other_exception", "hang", "memory", "crash")
OUTCOMES = (LOADED, NAMED_ERROR, OTHER_EXCEPTION, HANG, MEMORY, CRASH)
DEFECTS = (OTHER_EXCEPTION, HANG, MEMORY, CRASH)


@dataclass(frozen=True)
class Outcome:
    """How one trial ended; `error_type`, `message` and `where` describe an exception, if any."""

    kind: str
    error_type: str = ""
    message: str = ""
    where: str = ""
    names_file: bool = True      # for a named error: does it say which file is at fault?


Job = tuple[str, int]                      # (reader, trial index)
RunTrial = Callable[[str, int], Outcome]   # runs one job inside a worker


def mapped_bytes() -> int:
    """The virtual memory this process maps now (VmSize), so a limit can be set above it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker_main(connection: Connection, run_trial: RunTrial, memory_limit: int) -> None:
    """Serve jobs until told to stop (None); the address-space limit turns a runaway allocation
    into a MemoryError the trial can report instead of the machine swapping."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the parent's to handle
    limit = mapped_bytes() + memory_limit
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        job = connection.recv()
        if job is None:
            return
        connection.send(run_trial(*job))


class _Worker:
    def __init__(self, run_trial: RunTrial, memory_limit: int) -> None:
        context = multiprocessing.get_context("fork")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, run_trial, memory_limit),
                                       daemon=True)
        self.process.start()
        child.close()
        self.job: Job | None = None
        self.started = 0.0

    def submit(self, job: Job) -> None:
        self.job, self.started = job, time.monotonic()
        self.connection.send(job)

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()


class WorkerPool:
    """`size` workers; `run` yields (job, outcome) in completion order."""

    def __init__(self, run_trial: RunTrial, size: int, time_limit: float, memory_limit: int) -> None:
        self.run_trial, self.time_limit, self.memory_limit = run_trial, time_limit, memory_limit
        self.workers = [_Worker(run_trial, memory_limit) for _ in range(size)]

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self.workers:
            worker.stop()

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        pending = iter(jobs)
        while True:
            for worker in self.workers:
                if worker.job is None:
                    job = next(pending, None)
                    if job is not None:
                        worker.submit(job)
            busy = [w for w in self.workers if w.job is not None]
            if not busy:
                return
            deadline = min(w.started for w in busy) + self.time_limit
            ready = wait([w.connection for w in busy], timeout=max(deadline - time.monotonic(), 0.0))
            for slot, worker in enumerate(self.workers):
                if worker.job is None:
                    continue
                if worker.connection in ready:
                    yield self._collect(slot)
                elif time.monotonic() - worker.started > self.time_limit:
                    yield self._replace(slot, Outcome(HANG, message=f"no result within {self.time_limit:g} s"))

    def _collect(self, slot: int) -> tuple[Job, Outcome]:
        worker = self.workers[slot]
        try:
            outcome = worker.connection.recv()
        except (EOFError, ConnectionResetError):
            worker.process.join()
            code = worker.process.exitcode
            what = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
            return self._replace(slot, Outcome(CRASH, message=f"the worker died ({what})"))
        if outcome.kind == MEMORY:       # an interrupted allocation may leave the worker unsound
            return self._replace(slot, outcome)
        job, worker.job = worker.job, None
        return job, outcome

    def _replace(self, slot: int, outcome: Outcome) -> tuple[Job, Outcome]:
        worker = self.workers[slot]
        job = worker.job
        worker.kill()
        self.workers[slot] = _Worker(self.run_trial, self.memory_limit)
        return job, outcome
