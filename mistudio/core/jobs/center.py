"""The job center: every long operation of the app runs here, where its kind says it runs.

A :class:`~mistudio.core.jobs.kinds.JobKind` names a module-level function and its placement:

- ``thread``: a thread of this process, for work that only reads what is on disk (numpy over
  memory maps, Arrow, SQLite) and returns in a moment;
- ``process``: a fresh child process, for everything that runs torch, a tokenizer, a model or a
  long Python loop (measured in ``benchmarks/jobs.py``: such work on a thread of the app's
  process makes the app stall and runs slower, since its Python shares the interpreter);
- ``service``: the model service of the model it needs (one child process per loaded model,
  shared by every caller, kept between calls): generation, ablation, text probes, in-model
  evaluation.

The center owns the workspace handle each job gets (opened on the thread or in the process that
runs it), its progress, status, partial results and cancel (a :class:`CollectingTask` the
front end drains), and shutdown: :meth:`JobCenter.shutdown` cancels every job, waits for them
within a bound, stops their processes and the model services. Nothing else in the app starts
background work.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mistudio.core.jobs.kinds import JOBS, JobKind, Placement, resolve
from mistudio.core.jobs.services import ModelServices, in_service
from mistudio.core.models.hf import LOADING_MODULES
from mistudio.core.runtime.errors import Cancelled
from mistudio.core.runtime.processes import SpareProcess, run_in_child
from mistudio.core.runtime.tasks import CancelToken
from mistudio.core.store.workspace import Workspace


class CollectingTask:
    """The TaskState a job reports to: progress, status and partial results are collected and
    drained by the front end (at its own pace), cancel is a token it sets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: float | None = None
        self._status: str | None = None
        self._partials: list[Any] = []
        self.token = CancelToken()
        self.expected_s: float | None = None
        """Set by a job that cannot report progress: its expected duration (see drain)."""
        self._started = time.monotonic()

    def set_progress(self, fraction: float) -> None:
        with self._lock:
            self._progress = fraction

    def set_status(self, text: str) -> None:
        with self._lock:
            self._status = text

    def emit_partial(self, obj: Any) -> None:
        if isinstance(obj, dict) and "expected_seconds" in obj:
            self.expected_s = float(obj["expected_seconds"])  # a request to the front end
            self._started = time.monotonic()
            return
        with self._lock:
            self._partials.append(obj)

    def cancelled(self) -> bool:
        return self.token.is_set()

    def drain(self) -> tuple[float | None, str | None, list[Any]]:
        """What was reported since the last drain. A job that announced its expected duration
        and reports nothing else moves along it (never past 95%)."""
        with self._lock:
            progress, status, partials = self._progress, self._status, self._partials
            self._progress, self._status, self._partials = None, None, []
        if progress is None and self.expected_s:
            progress = min(0.95, (time.monotonic() - self._started) / self.expected_s)
        return progress, status, partials


class Job:
    """One started job: its kind, who started it, its task, and how it ended."""

    def __init__(self, kind: JobKind, title: str, owner: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.kind, self.title, self.owner = kind, title, owner
        self.args, self.kwargs = args, kwargs
        self.task = CollectingTask()
        self.result: Any = None
        self.error: BaseException | None = None
        self.details = ""
        """The traceback of an unexpected error (for the dialog's details)."""
        self.started = time.monotonic()
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def outcome(self) -> str:
        """running, done, cancelled or failed."""
        if self.running:
            return "running"
        if self.error is None:
            return "done"
        return "cancelled" if isinstance(self.error, Cancelled) else "failed"

    def cancel(self) -> None:
        self.task.token.cancel()


SPARE_MIN_FREE_BYTES = 4 * 2**30
"""A spare process (about 400 MB once torch and transformers are imported) is kept only with
this much RAM free."""
SPARE_SWITCH = "MISTUDIO_SPARE_PROCESS"
"""Set to 0 to never keep a spare process (boards short of memory, the test suite)."""


def spare_wanted() -> bool:
    """Whether to keep a spare process: allowed, and the machine has the memory for it."""
    import psutil

    return (os.environ.get(SPARE_SWITCH, "1") != "0"
            and psutil.virtual_memory().available >= SPARE_MIN_FREE_BYTES)


class JobCenter:
    """Starts jobs by kind, keeps the running ones, stops them all at shutdown.

    With ``spare``, a process for the next job is started ahead (:class:`SpareProcess`): a job
    placed in a process then starts without waiting seconds for a new interpreter to import
    torch (``benchmarks/jobs.py`` measures it). The spare is started when the center is and
    again when a job that used it has ended, never beside a running job's first seconds.
    """

    def __init__(self, root: str | Path, kinds: dict[str, JobKind] | None = None,
                 spare: bool = False) -> None:
        self.root = str(root)
        self.kinds = kinds if kinds is not None else JOBS
        self.services = ModelServices()
        self.jobs: list[Job] = []
        self._lock = threading.Lock()
        self.closed = False
        self._keep_spare = spare and spare_wanted()
        self._spare: SpareProcess | None = None
        self._refill_spare()

    def start(self, kind: str, *args: Any, title: str = "", owner: str = "",
              **kwargs: Any) -> Job:
        """Run job ``kind`` with ``args`` where its kind says it runs; returns at once."""
        if self.closed:
            raise RuntimeError("The job center is shut down.")
        spec = self.kinds[kind]
        job = Job(spec, title or spec.title, owner or kind, args, kwargs)
        job.thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                      name=f"mistudio-job-{kind}")
        with self._lock:
            self.jobs = [j for j in self.jobs if j.running] + [job]
        job.thread.start()
        return job

    def run(self, kind: str, *args: Any, task: Any = None, **kwargs: Any) -> Any:
        """Start job ``kind`` and wait for it, forwarding its reports to ``task`` (and ``task``'s
        cancel to it); return its result or raise its error (scripts, the self-test)."""
        job = self.start(kind, *args, **kwargs)
        assert job.thread is not None
        while job.thread.is_alive():
            job.thread.join(0.05)
            if task is not None:
                if task.cancelled():
                    job.cancel()
                progress, status, partials = job.task.drain()
                if status is not None:
                    task.set_status(status)
                if progress is not None:
                    task.set_progress(progress)
                for p in partials:
                    task.emit_partial(p)
        if job.error is not None:
            raise job.error
        return job.result

    def running(self, owner: str | None = None) -> list[Job]:
        with self._lock:
            return [j for j in self.jobs if j.running and (owner is None or j.owner == owner)]

    def _run(self, job: Job) -> None:
        try:
            job.result = self._call(job)
        except BaseException as err:  # reported to the front end, never lost
            job.error = err
            if not isinstance(err, Cancelled):
                job.details = traceback.format_exc()

    def _call(self, job: Job) -> Any:
        spec, task, args, kw = job.kind, job.task, job.args, job.kwargs
        if spec.placement is Placement.THREAD:
            return in_workspace(self.root, spec.fn, args, kw, task=task)
        if spec.placement is Placement.PROCESS:
            spare = self._take_spare()
            try:
                return run_in_child(in_workspace, self.root, spec.function, args, kw,
                                    task=task, spare=spare)
            finally:
                if spare is not None:
                    self._refill_spare()
        key = spec.model_of(self.root, *args, **kw) if spec.model_of else ("", "auto", "none")
        return self.services.get(self.root, key).call(in_service, self.root, spec.fn, args,
                                                      kw, task=task)

    def _preload(self) -> tuple[str, ...]:
        """What a spare process imports while it waits: torch, what loading a model imports
        from transformers, and the process jobs' modules."""
        modules = {k.function.partition(":")[0] for k in self.kinds.values()
                   if k.placement is Placement.PROCESS}
        return ("torch", *LOADING_MODULES, *sorted(modules))

    def _refill_spare(self) -> None:
        if not self._keep_spare:
            return
        with self._lock:
            if self.closed or (self._spare is not None and self._spare.alive):
                return
            self._spare = SpareProcess(self._preload())

    def _take_spare(self) -> SpareProcess | None:
        with self._lock:
            spare, self._spare = self._spare, None
        return spare if spare is not None and spare.alive else None

    def forget_models(self) -> None:
        """End the model services (the device changed): the next call loads the model again."""
        self.services.close_all()

    def shutdown(self, timeout_s: float = 10.0) -> list[Job]:
        """Cancel every job and wait for them (``timeout_s`` in all); child processes that do
        not stop are terminated, model services ended. Returns the jobs still running."""
        self.closed = True
        for job in self.running():
            job.cancel()
        deadline = time.monotonic() + timeout_s
        for job in self.running():
            assert job.thread is not None
            job.thread.join(max(0.0, deadline - time.monotonic()))
        self.services.close_all()
        spare = self._take_spare()
        if spare is not None:
            spare.close()
        return self.running()


def in_workspace(root: str, fn: Callable[..., Any] | str, args: tuple[Any, ...],
                 kwargs: dict[str, Any], task: Any = None) -> Any:
    """``fn(ws, *args, task=task, **kwargs)`` with a workspace handle of its own, opened on the
    thread (or in the process) that runs it (SQLite connections stay on their own thread).
    ``fn`` may be a ``module:function`` path: a child process then imports the job's module
    itself, and the app's process never does."""
    if isinstance(fn, str):
        fn = resolve(fn)
    ws = Workspace(root)
    try:
        return fn(ws, *args, task=task, **kwargs)
    finally:
        ws.close()
