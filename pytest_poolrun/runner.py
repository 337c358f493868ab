"""The controller's run loop: chunks out to the pool, events back into pytest's hooks.

Data flow, all in the controller's single thread::

    session.items ─▶ scheduling.plan_chunks ─▶ Pool.apply_async(itemrunner.run_chunk, chunk)
                                                        │ (forked workers run the items)
    Pool._pump, inside Pool.join() ◀────────────────────┘
      ├─ on_event(worker, ItemStarted)   ─▶ remember which item that worker runs (fresh workers;
      │                                     forked ones write it on the shared Board instead)
      ├─ on_event(worker, ItemFinished)  ─▶ events.replay: logstart, logreport…, logfinish
      ├─ on_event(worker, CaptureFiles)  ─▶ keep the worker's capture files open, for a crash
      ├─ chunk task done                 ─▶ remember the item the worker holds back
      ├─ chunk task failed               ─▶ its items that never started go out again
      ├─ on_worker_exit(worker, code)    ─▶ its running item is reported failed ("worker gw1 died
      │                                     while running it: signal 11 (SIGSEGV)"), the item
      │                                     it held goes out again; the pool starts a new worker
      └─ an error outside any test       ─▶ the run stops; it is raised as pytest's INTERNALERROR
                                            with the worker's traceback as its cause

An item's events are replayed together when it finishes (or, with ``--pool-report-order
collection``, once every item before it in collection order is replayed), so two workers' items
never interleave in the terminal and every item gets exactly one set of reports.  After each
replay the loop looks at ``session.shouldfail``/``shouldstop`` (set by ``-x``, ``--maxfail``
and plugins as in a serial run) and, once set, stops handing out work and tells the workers to
stop between items.

Ctrl-C (and SIGTERM, turned into KeyboardInterrupt while the run lasts) kills the workers with
their process groups at once; pytest then prints its usual interrupted summary.  Between waits
the loop also looks for tests past ``--pool-timeout``: it has their worker dump its stacks, reads
what the test printed so far, and kills the worker, which then counts as crashed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import pytest

from pytest_poolrun import events, itemrunner, scheduling
from pytest_poolrun.board import Board
from pytest_poolrun.durations import Durations
from pytest_poolrun.pool import (
    Pool,
    PoolExhaustedError,
    PoolHooks,
    TaskCancelledError,
    WorkerLostError,
    available_cpus,
)
from pytest_poolrun.workerset import WorkerExit

WORKER_PREFIX = "gw"
CHUNKS_IN_FLIGHT = 1
# Never wake more often than this to check for overdue tests: a busy loop would cost CPU.
MIN_WAKEUP = 0.05
# How long to wait for a worker to write its stacks after DUMP_SIGNAL, and how often to look.
DUMP_WAIT = 1.0
DUMP_POLL = 0.02
# How much of a timed-out test's captured output goes into its report (the end is kept).
CAPTURE_LIMIT = 10_000


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
        timeout: float | None = None,
        dist: str = "load",
        durations: Durations | None = None,
        tx: Sequence[str] = (),
        start: str = "fork",
        report_order: str = "completion",
        testrun_uid: str = "",
    ) -> None:
        self.session = session
        self.config = session.config
        self.items: Sequence[pytest.Item] = session.items
        self.workers = workers
        self.chunksize = chunksize
        self.max_restarts = max_restarts
        self.timeout = timeout
        self.dist = dist
        self.durations = durations or Durations()
        self.tx = list(tx)
        self.start = start
        self.board = Board(0)
        self.report_order = report_order
        self.pending: dict[int, Callable[[], None]] = {}
        self.capture_files: dict[str, list[tuple[str, BinaryIO]]] = {}
        self.next_index = 0
        self.started_at: dict[str, float] = {}
        self.timed_out: dict[str, str] = {}
        self.testrun_uid = testrun_uid
        self.state = [_State.QUEUED] * len(self.items)
        self.running: dict[str, int] = {}
        self.held: dict[str, int] = {}
        self.aborted: dict[str, events.ItemAborted] = {}
        self.stopping = False
        self.session_exit: events.SessionExit | None = None
        self.internal_error: BaseException | None = None
        self.pool: Pool | None = None

    # ------------------------------------------------------------------------------- running

    def run(self) -> None:
        local = self.workers - len(self.tx)
        self.board = Board(local if self.start == "fork" else 0)
        self.fault_dir = Path(tempfile.mkdtemp(prefix="poolrun-faults-"))
        itemrunner.prepare(self.session, self.board, self._basetemp(), self.fault_dir)
        # Whatever sits in the stream buffers now would be inherited, and flushed again, by every
        # forked worker.
        sys.stdout.flush()
        sys.stderr.flush()
        infos = [
            scheduling.ItemInfo(item.nodeid, self.durations.get(item.nodeid), _group(item))
            for item in self.items
        ]
        chunks = scheduling.plan_chunks(infos, self.workers, self.chunksize, self.dist)
        invocation = itemrunner.Invocation(
            tuple(self.config.invocation_params.args),
            str(self.config.invocation_params.dir),
            tuple(item.nodeid for item in self.items),
        )
        specs = self.tx if self.start == "fork" else ["popen"] * local + self.tx
        self.pool = Pool(
            local if self.start == "fork" else 0,
            initializer=itemrunner.start_worker,
            initargs=(self.workers, self.testrun_uid, invocation),
            tx=specs,
            # One chunk at a time: chunks differ widely in length, so the next goes to whichever
            # worker is free first (longest-processing-time first needs that); a worker waits
            # one round trip between chunks, which is little against a chunk's length.
            in_flight=CHUNKS_IN_FLIGHT,
            start_method="fork",
            hooks=PoolHooks(self._on_event, self._on_worker_exit, itemrunner.finish_worker),
            name_prefix=WORKER_PREFIX,
            max_restarts=self.max_restarts,
        )
        previous_sigterm = _sigterm_interrupts()
        try:
            for chunk in chunks:
                self._submit(chunk)
            self.pool.shutdown_idle()
            while not self.pool.join(timeout=self._until_next_deadline()):
                self._expire_overdue_items()
        finally:
            self.pool.terminate()
            shutil.rmtree(self.fault_dir, ignore_errors=True)
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
        if self.internal_error is not None:
            raise self.internal_error
        if self.session_exit is not None:
            raise pytest.exit.Exception(self.session_exit.message, self.session_exit.returncode)

    def _basetemp(self) -> Path | None:
        factory: Any = getattr(self.config, "_tmp_path_factory", None)
        if factory is None:
            return None
        base: Path = factory.getbasetemp()
        return base

    # ------------------------------------------------------------------------------ timeouts

    def _current(self, worker: str) -> tuple[int, float] | None:
        """(item, start time) that ``worker`` runs now, from its announcement or the board."""
        if worker in self.running:
            return self.running[worker], self.started_at[worker]
        return self.board.running(_slot(worker))

    def _until_next_deadline(self) -> float | None:
        if self.timeout is None:
            return None
        assert self.pool is not None
        starts = [
            current[1]
            for worker in self.pool.worker_names()
            if (current := self._current(worker)) is not None
        ]
        if not starts:
            return self.timeout
        return max(MIN_WAKEUP, min(starts) + self.timeout - time.monotonic())

    def _expire_overdue_items(self) -> None:
        """Dump the stacks of each worker whose test overran --pool-timeout, then kill it."""
        assert self.timeout is not None and self.pool is not None
        now = time.monotonic()
        for worker in self.pool.worker_names():
            current = self._current(worker)
            if current is None or now - current[1] < self.timeout or worker in self.timed_out:
                continue
            local_pid = self.pool.pid_of(worker)
            output = ""
            if local_pid is not None and _slot(worker) < self.board.slots:
                stacks = self._dump_stacks(worker, local_pid)
                output = self._take_captured_output(worker, local_pid)
            else:
                stacks = "(not available: the test ran behind an execnet gateway)"
            self.timed_out[worker] = (
                f"Timeout: the test ran longer than --pool-timeout={self.timeout:g}s; "
                f"worker {worker} was killed and replaced.\n\nStacks of the worker when it "
                f"was stopped:\n{stacks}{output}"
            )
            self.pool.kill(worker)

    def _dump_stacks(self, worker: str, pid: int) -> str:
        path = itemrunner.fault_path(self.fault_dir, worker, pid)
        before = _size(path)
        try:
            os.kill(pid, itemrunner.DUMP_SIGNAL)
        except ProcessLookupError:
            return "(the worker had already exited)"
        # faulthandler writes from its signal handler; wait until the file stops growing.
        deadline = time.monotonic() + DUMP_WAIT
        last = before
        while time.monotonic() < deadline:
            time.sleep(DUMP_POLL)
            size = _size(path)
            if size > before and size == last:
                break
            last = size
        try:
            with open(path) as dump:
                dump.seek(before)
                return _trim_stacks(dump.read()) or "(no stacks were written)"
        except OSError:
            return "(no stacks were written)"

    def _fault_text(self, worker: str) -> str:
        """What the dead ``worker`` wrote to its fault files (a fatal error's traceback)."""
        texts = []
        for path in sorted(self.fault_dir.glob(f"{worker}-*.txt")):
            text = path.read_text()
            if text:
                texts.append(_trim_stacks(text))
                path.unlink()
        return "\n".join(texts)

    def _submit(self, chunk: list[int]) -> None:
        assert self.pool is not None
        self.pool.apply_async(
            itemrunner.run_chunk,
            (chunk, not self._is_long_test(chunk)),
            callback=self._chunk_done,
            error_callback=lambda error: self._chunk_failed(chunk, error),
        )

    def _is_long_test(self, chunk: list[int]) -> bool:
        """A chunk of one test known to be long runs at once, not held (see run_chunk)."""
        if len(chunk) != 1:
            return False
        seconds = self.durations.get(self.items[chunk[0]].nodeid)
        return seconds is not None and seconds >= scheduling.MIN_CHUNK_SECONDS

    def _stop(self) -> None:
        """-x, --maxfail or a plugin asked to stop: no new item starts anywhere."""
        if self.stopping:
            return
        self.stopping = True
        self.board.request_stop()
        assert self.pool is not None
        self.pool.cancel_queued()

    # ----------------------------------------------------------------------------- callbacks

    def _on_event(self, worker: str, batch: tuple[events.WorkerEvent, ...]) -> None:
        for event in batch:
            self._on_worker_event(worker, event)

    def _on_worker_event(self, worker: str, event: events.WorkerEvent) -> None:
        if isinstance(event, events.ItemStarted):
            self.running[worker] = event.item
            self.started_at[worker] = time.monotonic()
            self.state[event.item] = _State.RUNNING
            if self.held.get(worker) == event.item:
                del self.held[worker]
        elif isinstance(event, events.ItemFinished):
            self.running.pop(worker, None)
            self.started_at.pop(worker, None)
            self.state[event.item] = _State.DONE
            self._deliver(event.item, partial(self._replay, event.events))
        elif isinstance(event, events.CaptureFiles):
            self._keep_capture_files(worker, event)
        elif isinstance(event, events.ItemAborted):
            # Known now, before the failed chunk's callback: that item must not go out again.
            self.running[worker] = event.item
            self.started_at[worker] = time.monotonic()
            self.state[event.item] = _State.RUNNING
            self.aborted[worker] = event
        elif isinstance(event, events.SessionExit):
            self.running.pop(worker, None)
            self.started_at.pop(worker, None)
            self.state[event.item] = _State.DONE
            self._deliver(event.item, partial(self._exit_session, event))
        else:
            self._replay(event.events)

    def _deliver(self, index: int, replay: Callable[[], None]) -> None:
        """Replay item ``index``'s reports now, or once every earlier item's are replayed.

        In collection order the output is a serial run's, line for line: an item that finished
        early waits for the items before it, and after ``-x`` the items past the failing one
        are dropped, as a serial run would never have run them.
        """
        if self.report_order == "completion":
            replay()
            return
        self.pending[index] = replay
        while self.next_index in self.pending and not self.stopping:
            self.pending.pop(self.next_index)()
            self.next_index += 1

    def _keep_capture_files(self, worker: str, event: events.CaptureFiles) -> None:
        """Open the worker's capture files now: they stay readable after it dies."""
        self._close_capture_files(worker)
        kept: list[tuple[str, BinaryIO]] = []
        for name, fd in (("stdout", event.stdout_fd), ("stderr", event.stderr_fd)):
            if fd is None:
                continue
            link = f"/proc/{event.pid}/fd/{fd}"
            try:
                if not os.path.isfile(link):
                    continue  # a terminal, pipe or socket: not a capture file
                kept.append((name, open(link, "rb")))
            except OSError:
                continue  # not Linux, or the worker is already gone
        self.capture_files[worker] = kept

    def _close_capture_files(self, worker: str) -> list[tuple[str, str]]:
        """Close ``worker``'s capture files; return what they hold, as report sections."""
        return [
            (f"Captured {name} (until the worker died)", text)
            for name, text in self._read_capture_files(worker)
        ]

    def _take_captured_output(self, worker: str, pid: int) -> str:
        """What the overdue test printed so far, for its timeout message.

        The capture files are read, and closed, here only: the crash report that follows the
        kill then has no capture sections to repeat the same output in.
        """
        if worker not in self.capture_files:
            self._keep_capture_files(worker, events.CaptureFiles(pid, 1, 2))
        return "".join(
            f"\n\nCaptured {name} so far:\n{text}"
            for name, text in self._read_capture_files(worker)
        )

    def _read_capture_files(self, worker: str) -> list[tuple[str, str]]:
        """The one reader of a worker's capture files: (stream, its end), then closed."""
        read = []
        for name, capture in self.capture_files.pop(worker, []):
            with capture:
                capture.seek(0)
                text = capture.read()[-CAPTURE_LIMIT:].decode("utf-8", "replace")
            if text:
                read.append((name, text))
        return read

    def _exit_session(self, event: events.SessionExit) -> None:
        self._replay(event.recorded)
        self.session_exit = event
        self._stop()

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
        if isinstance(error, Exception) and not isinstance(error, WorkerLostError):
            # Not a test's doing: pytest's protocol itself failed in the worker (a plugin hook
            # raised, a report could not be sent).  A serial run would end with INTERNALERROR.
            self.internal_error = error
            self._stop()
            return
        unstarted = [index for index in chunk if self.state[index] is _State.QUEUED]
        if isinstance(error, PoolExhaustedError):
            for index in unstarted:
                self._report_not_run(index, str(error))
            return
        if unstarted:
            self._submit(unstarted)

    def _on_worker_exit(self, ended: WorkerExit) -> None:
        worker = ended.name
        if ended.setup_error is not None:
            self._say(f"poolrun: {ended.setup_error}")
        current = self._current(worker)
        index = None if current is None else current[0]
        self.running.pop(worker, None)
        self.started_at.pop(worker, None)
        aborted = self.aborted.pop(worker, None)
        timed_out = self.timed_out.pop(worker, None)
        if index is not None and self.state[index] is not _State.DONE:
            self.state[index] = _State.DONE
            if timed_out is not None:
                why = timed_out
            elif aborted is not None:
                text = aborted.description
                last_line = text.strip().splitlines()[-1]
                why = f"worker {worker} stopped while running it: {last_line}\n\n{text}"
            else:
                why = f"worker {worker} died while running it: {ended.describe()}"
                fault = self._fault_text(worker)
                if fault:
                    why += f"\n\n{fault}"
            sections = self._close_capture_files(worker)
            if aborted is not None:
                sections = [*aborted.sections, *sections]
            self._report_crash(index, why, sections)
        else:
            self._close_capture_files(worker)
        held = self.held.pop(worker, None)
        if held is not None and self.state[held] is _State.QUEUED and not self.stopping:
            self._submit([held])

    def _say(self, line: str) -> None:
        reporter: Any = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line)

    # ------------------------------------------------------------------------ synthetic reports

    def _report_crash(self, index: int, why: str, sections: Sequence[tuple[str, str]] = ()) -> None:
        self._deliver(index, partial(self._report_synthetic, index, why, "call", sections))

    def _report_not_run(self, index: int, why: str) -> None:
        self.state[index] = _State.DONE
        self._deliver(index, partial(self._report_synthetic, index, f"not run: {why}", "setup"))

    def _report_synthetic(
        self, index: int, longrepr: str, when: str, sections: Sequence[tuple[str, str]] = ()
    ) -> None:
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
            sections=list(sections),
            duration=0.0,
            start=0.0,
            stop=0.0,
            user_properties=list(item.user_properties),
        )
        hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        if self.session.shouldfail or self.session.shouldstop:
            self._stop()


def _group(item: pytest.Item) -> str | None:
    """The ``xdist_group`` mark's name, which --pool-dist group keeps on one worker."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    name = marker.kwargs.get("name", marker.args[0] if marker.args else None)
    return None if name is None else str(name)


def _slot(worker: str) -> int:
    return int(worker[len(WORKER_PREFIX) :])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _trim_stacks(dump: str) -> str:
    """Drop the frames below the worker's item loop: a forked worker inherits the controller's
    call stack, which says nothing about the test."""
    kept: list[str] = []
    skipping = False
    for line in dump.splitlines():
        if line.lstrip().startswith("File ") and "pytest_poolrun" in line:
            skipping = True
            continue
        if not line.lstrip().startswith("File "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept).strip()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def _sigterm_interrupts() -> Any:
    """Make SIGTERM end the run as Ctrl-C does; returns the handler to restore, if any."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def resolve_workers(requested: int | str | None, item_count: int) -> int:
    """``auto`` → the CPUs this process may use; never more workers than items."""
    wanted = available_cpus() if requested == "auto" else int(requested or 0)
    return max(0, min(wanted, item_count))
