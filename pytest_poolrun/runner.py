"""The controller's run loop: chunks out to the pool, events back into pytest's hooks.

Data flow, all in the controller's single thread::

    session.items ─▶ scheduling.plan_chunks ─▶ Pool.apply_async(itemrunner.run_chunk, chunk)
                                                        │ (forked workers run the items)
    Pool._pump, inside Pool.join() ◀────────────────────┘
      ├─ on_event(worker, ItemStarted)   ─▶ remember which item that worker runs
      ├─ on_event(worker, ItemFinished)  ─▶ events.replay: logstart, logreport…, logfinish
      ├─ chunk task done                 ─▶ remember the item the worker holds back
      ├─ chunk task failed               ─▶ its items that never started go out again
      └─ on_worker_exit(worker, code)    ─▶ its running item is reported failed ("worker gw1 died
                                            while running it: signal 11 (SIGSEGV)"), the item
                                            it held goes out again; the pool starts a new worker

An item's events are replayed together when it finishes, so two workers' items never interleave
in the terminal and every item gets exactly one set of reports.  After each replay the loop looks
at ``session.shouldfail``/``shouldstop`` (set by ``-x``, ``--maxfail`` and plugins as in a serial
run) and, once set, stops handing out work and tells the workers to stop between items.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from pytest_poolrun import events, itemrunner, scheduling
from pytest_poolrun.pool import Pool, PoolExhaustedError, TaskCancelledError
from pytest_poolrun.poolworker import describe_exit

WORKER_PREFIX = "gw"


class _State(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class Controller:
    """Runs ``session.items`` on ``workers`` forked workers and replays what they report."""

    def __init__(
        self,
        session: pytest.Session,
        workers: int,
        chunksize: int | None,
        max_restarts: int | None,
    ) -> None:
        self.session = session
        self.config = session.config
        self.items: Sequence[pytest.Item] = session.items
        self.workers = workers
        self.chunksize = chunksize
        self.max_restarts = max_restarts
        self.testrun_uid = uuid.uuid4().hex
        self.state = [_State.QUEUED] * len(self.items)
        self.running: dict[str, int] = {}
        self.held: dict[str, int] = {}
        self.aborted: dict[str, str] = {}
        self.stopping = False
        self.pool: Pool | None = None

    # ------------------------------------------------------------------------------- running

    def run(self) -> None:
        stop_flag = itemrunner.new_stop_flag()
        itemrunner.prepare(self.session, stop_flag, self._basetemp())
        # Whatever sits in the stream buffers now would be inherited, and flushed again, by every
        # forked worker.
        sys.stdout.flush()
        sys.stderr.flush()
        keys = [scheduling.scope_key(item.nodeid) for item in self.items]
        chunks = scheduling.plan_chunks(keys, self.workers, self.chunksize)
        self.pool = Pool(
            self.workers,
            initializer=itemrunner.start_worker,
            initargs=(self.workers, self.testrun_uid),
            finalizer=itemrunner.finish_worker,
            start_method="fork",
            on_event=self._on_event,
            on_worker_exit=self._on_worker_exit,
            name_prefix=WORKER_PREFIX,
            max_restarts=self.max_restarts,
        )
        self._stop_flag = stop_flag
        try:
            for chunk in chunks:
                self._submit(chunk)
            self.pool.shutdown_idle()
            self.pool.join()
        finally:
            self.pool.terminate()

    def _basetemp(self) -> Path | None:
        factory: Any = getattr(self.config, "_tmp_path_factory", None)
        if factory is None:
            return None
        base: Path = factory.getbasetemp()
        return base

    def _submit(self, chunk: list[int]) -> None:
        assert self.pool is not None
        self.pool.apply_async(
            itemrunner.run_chunk,
            (chunk,),
            callback=self._chunk_done,
            error_callback=lambda error: self._chunk_failed(chunk, error),
        )

    def _stop(self) -> None:
        """-x, --maxfail or a plugin asked to stop: no new item starts anywhere."""
        if self.stopping:
            return
        self.stopping = True
        self._stop_flag[0] = 1
        assert self.pool is not None
        self.pool.cancel_queued()

    # ----------------------------------------------------------------------------- callbacks

    def _on_event(self, worker: str, event: events.WorkerEvent) -> None:
        if isinstance(event, events.ItemStarted):
            self.running[worker] = event.item
            self.state[event.item] = _State.RUNNING
            if self.held.get(worker) == event.item:
                del self.held[worker]
        elif isinstance(event, events.ItemFinished):
            self.running.pop(worker, None)
            self.state[event.item] = _State.DONE
            self._replay(event.events)
        elif isinstance(event, events.ItemAborted):
            self.aborted[worker] = event.description
        else:
            self._replay(event.events)

    def _replay(self, hook_events: Sequence[events.HookEvent]) -> None:
        if self.stopping:
            return
        for event in hook_events:
            events.replay(self.config, event)
        if self.session.shouldfail or self.session.shouldstop:
            self._stop()

    def _chunk_done(self, result: tuple[str, int | None]) -> None:
        worker, held = result
        if held is not None and self.state[held] is _State.QUEUED:
            self.held[worker] = held

    def _chunk_failed(self, chunk: list[int], error: BaseException) -> None:
        if self.stopping or isinstance(error, TaskCancelledError):
            return
        unstarted = [index for index in chunk if self.state[index] is _State.QUEUED]
        if isinstance(error, PoolExhaustedError):
            for index in unstarted:
                self._report_not_run(index, str(error))
            return
        if unstarted:
            self._submit(unstarted)

    def _on_worker_exit(self, worker: str, exitcode: int | None, expected: bool) -> None:
        index = self.running.pop(worker, None)
        aborted = self.aborted.pop(worker, None)
        if index is not None and self.state[index] is _State.RUNNING:
            self.state[index] = _State.DONE
            if aborted is not None:
                why = f"worker {worker} stopped while running it:\n{aborted}"
            else:
                why = f"worker {worker} died while running it: {describe_exit(exitcode)}"
            self._report_crash(index, why)
        held = self.held.pop(worker, None)
        if held is not None and self.state[held] is _State.QUEUED and not self.stopping:
            self._submit([held])

    # ------------------------------------------------------------------------ synthetic reports

    def _report_crash(self, index: int, why: str) -> None:
        self._report_synthetic(index, why, "call")

    def _report_not_run(self, index: int, why: str) -> None:
        self.state[index] = _State.DONE
        self._report_synthetic(index, f"not run: {why}", "setup")

    def _report_synthetic(self, index: int, longrepr: str, when: str) -> None:
        if self.stopping:
            return
        item = self.items[index]
        hook = self.config.hook
        hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        report = pytest.TestReport(
            nodeid=item.nodeid,
            location=item.location,
            keywords={name: 1 for name in item.keywords},
            outcome="failed",
            longrepr=longrepr,
            when=when,  # type: ignore[arg-type]
            sections=[],
            duration=0.0,
            start=0.0,
            stop=0.0,
            user_properties=list(item.user_properties),
        )
        hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        if self.session.shouldfail or self.session.shouldstop:
            self._stop()


def resolve_workers(requested: str, item_count: int) -> int:
    """``auto`` → the CPUs this process may use; never more workers than items."""
    from pytest_poolrun.pool import available_cpus

    wanted = available_cpus() if requested == "auto" else int(requested)
    return max(0, min(wanted, item_count))


def fork_available() -> bool:
    return hasattr(os, "fork")
