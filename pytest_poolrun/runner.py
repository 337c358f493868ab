"""The controller's run loop: chunks out to the pool, events back into pytest's hooks.

**The invariant: every collected test runs at most once and is reported exactly once.**  A test
may have side effects, so a test that started never goes out again, and the verdict it produced
is the one reported.  (Once the run stops, by ``-x``, ``--maxfail`` or ``pytest.exit``, the tests
that did not start are not reported, as serially; and a plugin may ask, through
``pytest_handlecrashitem``, for a crashed test to run again, as pytest-rerunfailures does.)  How
it is kept:

- a forked worker writes each finished item's record to its slot's results journal before the
  board shows its next item running (``itemrunner``); when a worker dies, its socket is read to
  the end, then its journal, and every result found is replayed once (the ledger says which
  items are done, so a record that came both ways counts once);
- the item the board (or a fresh worker's ``ItemStarted``) shows running is reported as crashed
  or timed out, never run again; a timeout is pinned on the item that overran (``timeouts``);
- of a dead worker's chunk, only the items after the last one known to have started go out
  again: the items before it ran, and one without a result (a record torn by the kill) is
  reported as lost, not run again (``ItemLedger.after_death``);
- a report that cannot be pickled is made sendable or turned into that test's failure in the
  worker (``events.encode``), so it never takes other results with it.

Data flow, all in the controller's single thread::

    session.items ─▶ scheduling.plan_chunks ─▶ Pool.apply_async(itemrunner.run_chunk, chunk)
                                                        │ (forked workers run the items)
    the pool's loop, inside Pool.join() ◀───────────────┘
      ├─ on_event(worker, ItemStarted)   ─▶ ItemLedger: that worker runs that item (fresh
      │                                     workers; forked ones write it on the shared Board)
      ├─ on_event(worker, ItemFinished)  ─▶ Replayer: logstart, logreport…, logfinish
      ├─ on_event(worker, CaptureFiles)  ─▶ PostMortem keeps the worker's capture files open
      ├─ chunk task done                 ─▶ ItemLedger: the item the worker holds back
      ├─ on_worker_exit(WorkerExit)      ─▶ its journal's records it had not sent are replayed;
      │                                     its running item is reported failed ("worker gw1 died
      │                                     while running it: signal 11 (SIGSEGV)", with its fault
      │                                     file and captured output), the item it held goes out
      │                                     again; the pool starts a new worker
      ├─ chunk task failed (after that)  ─▶ its items after the last one started go out again
      └─ an error outside any test       ─▶ the run stops; it is raised as pytest's INTERNALERROR
                                            with the worker's traceback as its cause
    between waits: Timeouts.expire ─▶ stacks and output into the message, Pool.kill(worker)

From collection to the session's end the controller's garbage collector starts no full
collection (``gcpause``): they would walk the collected session and the kept reports again and
again, and copy every page of them the workers share.  It collects everything once just before
the fork, so that no worker inherits the collections held off.  While the pool runs, the status
question the terminal reporter asks of every replayed report, ``pytest_report_teststatus``, is
a direct caller on ``config.hook`` (``directhooks``).

The parts: ``ledger`` (item states), ``replayer`` (reports, ordering, synthetic reports),
``postmortem`` (fault files, stack dumps, capture files), ``timeouts``.  ``Controller`` wires
them from one frozen ``RunOptions``; it takes a pool factory, so tests drive it with a fake pool.

After each replay the replayer looks at ``session.shouldfail``/``shouldstop`` (``-x``,
``--maxfail``, plugins) and, once set, the controller stops handing out work and tells the
workers to stop between items.  On Ctrl-C (and SIGTERM, turned into KeyboardInterrupt while the
run lasts) the results the workers' journals hold and the socket had not brought are reported;
the local workers interrupt their tests and tear their fixtures down (``workerstop``), and the
pool kills the workers with their process groups; pytest then prints its usual interrupted
summary, naming the line the longest-running test was at, as a serial run names the line of
the test it interrupted: a forked worker's stacks say it, a spawned worker's interrupted test
reports it as the worker stops (``Pool.take_events`` reads that report, and nothing else).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, Protocol

import pytest

from pytest_poolrun import (
    adapters,
    coverageadapter,
    directhooks,
    events,
    gcpause,
    interruption,
    iteminfo,
    itemrunner,
    junitrecords,
    scheduling,
    workerstop,
)
from pytest_poolrun.board import Board
from pytest_poolrun.codec import RemoteTraceback
from pytest_poolrun.console import Console
from pytest_poolrun.durations import Durations
from pytest_poolrun.extraoptions import ExtraOptions
from pytest_poolrun.ledger import ItemLedger
from pytest_poolrun.manager import PoolHooks
from pytest_poolrun.plainfork import PLAIN_FORK
from pytest_poolrun.pool import Pool
from pytest_poolrun.poolerrors import PoolExhaustedError, TaskCancelledError, WorkerLostError
from pytest_poolrun.postmortem import PostMortem
from pytest_poolrun.recycling import Retired
from pytest_poolrun.replayer import Replayer
from pytest_poolrun.sharedfixtures import SharedFixtures
from pytest_poolrun.slotfiles import SlotFiles
from pytest_poolrun.slowtests import SlowNotices, earliest
from pytest_poolrun.timeouts import Timeouts
from pytest_poolrun.workerset import LiveWorker, WorkerExit, available_cpus
from pytest_poolrun.xdistnode import WorkerNodes, xdist_hooks_present

WORKER_PREFIX = "gw"
# One chunk at a time: chunks differ widely in length, so the next goes to whichever worker is
# free first (longest-processing-time first needs that); a worker waits one round trip between
# chunks, which is little against a chunk's length.
CHUNKS_IN_FLIGHT = 1
# Worker specs of processes on this machine: forked, and execnet's popen gateways.
LOCAL_SPECS = ("fork", "popen")


@dataclass(frozen=True)
class RunOptions:
    """Everything the command line decides about a run, read once by the plugin."""

    workers: int  # local and execnet together
    chunksize: int | None
    max_restarts: int | None
    timeout: float | None
    dist: str
    tx: tuple[str, ...]
    start: str  # "fork" or "spawn", for the local workers
    report_order: str
    testrun_uid: str
    # Shared fixtures, leaks, recycling, slow notices (extraoptions).
    extras: ExtraOptions = field(default_factory=ExtraOptions)

    @property
    def local(self) -> int:
        return self.workers - len(self.tx)

    @property
    def forked(self) -> int:
        """Local workers forked after collection (they share the Board)."""
        return self.local if self.start == "fork" else 0

    def worker_specs(self) -> list[str]:
        """How each slot's worker starts: forked ones first, then spawned, then execnet."""
        spawned = self.local - self.forked
        return [*(["fork"] * self.forked), *(["popen"] * spawned), *self.tx]

    def stoppable_slots(self) -> set[int]:
        """The slots whose workers run on this machine: the stop signal reaches them, directly
        or through their execnet bridge (gateway), so Ctrl-C lets them tear down."""
        return {
            slot for slot, spec in enumerate(self.worker_specs()) if spec.startswith(LOCAL_SPECS)
        }

    def worker_names(self) -> list[str]:
        return [f"{WORKER_PREFIX}{slot}" for slot in range(self.workers)]


class RunnerPool(Protocol):
    """What the controller needs of a pool (``pool.Pool``, or a fake one in unit tests)."""

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Sequence[Any] = (),
        kwds: None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        ahead: bool = False,
    ) -> object: ...

    def cancel_queued(self) -> None: ...

    def shutdown_idle(self) -> None: ...

    def join(self, timeout: float | None = None) -> bool: ...

    def terminate(self) -> None: ...

    def kill(self, name: str) -> None: ...

    def live_workers(self) -> list[LiveWorker]: ...

    def take_events(self) -> None: ...


PoolFactory = Callable[..., RunnerPool]


class Controller:
    """Runs ``session.items`` on the workers ``options`` asks for and replays what they report."""

    def __init__(
        self,
        session: pytest.Session,
        options: RunOptions,
        durations: Durations | None = None,
        pool_factory: PoolFactory = Pool,
        shared: SharedFixtures | None = None,
        nodes: WorkerNodes | None = None,
    ) -> None:
        self.session = session
        self.config = session.config
        self.items: Sequence[pytest.Item] = session.items
        self.options = options
        self.durations = durations or Durations()
        self._pool_factory = pool_factory
        self.board = Board(options.forked)
        self.journal = SlotFiles(options.forked, "poolrun-journal")
        self.ledger = ItemLedger(len(self.items), self.board)
        self.replayer = Replayer(session, options.report_order, self._stop)
        self.postmortem = PostMortem(options.forked)
        self.timeouts = Timeouts(options.timeout, self.ledger, self.postmortem)
        # Set up already where the plugin chose how workers start (see sharedfixtures).
        self.shared = (
            SharedFixtures(session, options.extras.shared_fixtures) if shared is None else shared
        )
        self.console = Console(self.config)
        self.slow = SlowNotices(options.extras.slow, self.ledger, self._nodeid, self.console.say)
        # Configured already where the plugin chose how workers start (see xdistnode).
        if nodes is None:
            names, specs = options.worker_names(), options.worker_specs()
            nodes = WorkerNodes(self.config, names, specs, options.testrun_uid)
        self.nodes = nodes
        self.session_exit: events.SessionExit | None = None
        self.internal_error: BaseException | None = None
        self.interrupted: interruption.Interrupt | None = None  # a test raised KeyboardInterrupt
        self.interrupted_item = -1  # that test
        # While Ctrl-C stops spawned workers: where each interrupted test was, by item.
        self.stopped_at: dict[int, interruption.Interrupt] | None = None
        # Workers that retired (recycling, pytest.exit) ─▶ the items they handed back.
        self.retired_with: dict[str, list[int]] = {}
        self.pool: RunnerPool | None = None  # started by run(), after the board and prepare()

    # ------------------------------------------------------------------------------- running

    def run(self) -> None:
        self.shared.setup()  # before any fork: forked workers inherit the values
        self.shared.announce()
        restore_worker_state = itemrunner.prepare(
            self.session, self.board, self._basetemp(), self.journal, self.postmortem.fault_files
        )
        try:
            self._run_prepared()
        finally:
            # This process was a worker of an outer run before (a test's in-process session).
            restore_worker_state()

    def _run_prepared(self) -> None:
        """The run, once ``itemrunner.prepare`` has handed the workers what they inherit."""
        options = self.options
        workerinputs = self.nodes.inputs()
        for workerinput in workerinputs.values():
            coverageadapter.add_coverage_input(self.config, workerinput)
        self.shared.add_to(workerinputs, options.forked < options.workers)
        # Spawned local workers are execnet popen gateways: they collect for themselves.
        specs = options.worker_specs()[options.forked :]
        # Read once, for the invocation and the plan (pytest 9 makes a node id at each read).
        nodeids = tuple(item.nodeid for item in self.items)
        invocation = itemrunner.Invocation(
            tuple(self.config.invocation_params.args),
            str(self.config.invocation_params.dir),
            # A worker that collects for itself checks its tests against these: a spawned one,
            # and a replacement started through a forkserver while a foreign thread runs.
            nodeids,
            workerinputs,
        )
        if options.forked:
            gcpause.for_config(self.config).settle()
        pool = self.pool = self._pool_factory(
            options.forked,
            initializer=itemrunner.start_worker,
            initargs=(options.workers, options.testrun_uid, invocation),
            tx=specs,
            in_flight=CHUNKS_IN_FLIGHT,
            # Forked without multiprocessing's bootstrap: tests see the main process, as serially.
            context=PLAIN_FORK,
            hooks=PoolHooks(self._on_event, self._on_worker_exit, itemrunner.finish_worker),
            name_prefix=WORKER_PREFIX,
            max_restarts=options.max_restarts,
        )
        previous_sigterm = _sigterm_interrupts()
        restore_status_hook = directhooks.install_in_controller(self.config)
        ctrl_c_at: interruption.Interrupt | None = None
        try:
            # Planned while the workers start up (a tenth of a second at 50,000 tests): they
            # need nothing of the plan but its chunks.
            infos = iteminfo.describe(
                self.config, self.items, nodeids, self.durations, options.dist
            )
            chunks = scheduling.plan_chunks(infos, options.workers, options.chunksize, options.dist)
            del infos  # nothing of it is needed while the run lasts
            for chunk in chunks:
                self._submit(chunk)
            del chunks  # each goes once its task is done
            pool.shutdown_idle()
            while not pool.join(timeout=self._next_wakeup(pool.live_workers())):
                for worker in self.timeouts.expire(pool.live_workers()):
                    pool.kill(worker)
                self.slow.announce(pool.live_workers())
        except KeyboardInterrupt as exc:
            live = pool.live_workers()
            self.slow.interrupted(live, self.config.pluginmanager)
            self._salvage_journals(live)  # first: the stack dump may end a test early
            ctrl_c_at = self._where_the_tests_were(exc, live)
            self._stop_as_interrupted(live)
            if ctrl_c_at is None:
                ctrl_c_at = self._where_spawned_tests_were(pool)
            if ctrl_c_at is None:
                raise
        finally:
            restore_status_hook()
            pool.terminate()
            self.shared.restore()  # no worker forks any more: the controller may tear down
            self.postmortem.cleanup()
            self.journal.close()
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
        if ctrl_c_at is not None:
            interruption.raise_where_raised(ctrl_c_at)
        if self.interrupted is not None:
            self.replayer.release_through(self.interrupted_item)
        self.shared.teardown(self.items[-1])
        if self.internal_error is not None:
            raise self.internal_error
        if self.interrupted is not None:
            # As serially: pytest prints its interrupted summary, naming the test's line, and
            # exits with code 2.
            interruption.raise_where_raised(self.interrupted)
        if self.session_exit is not None:
            raise pytest.exit.Exception(self.session_exit.message, self.session_exit.returncode)

    def _where_the_tests_were(
        self, exc: KeyboardInterrupt, live: list[LiveWorker]
    ) -> interruption.Interrupt | None:
        """Ctrl-C (or SIGTERM) as if it had landed in the longest-running test, where a serial
        run's lands: at the line its worker's stacks show (None: no forked worker runs a test;
        only they have a fault file for their stacks)."""
        dumping = {worker.name: worker for worker in self._forked(live)}
        running = [
            dumping[entry.worker] for entry in self.slow.unfinished if entry.worker in dumping
        ]
        if not running:
            return None
        # One worker's stacks, not each one's: the run must stop at once (a dump may take a
        # moment to arrive).
        stacks = self.postmortem.dump_stacks(running[0].slot, running[0].pid)
        location = interruption.innermost_in_dump(stacks)
        if location is None:
            return None
        return interruption.Interrupt.of(exc)._replace(location=location)

    def _where_spawned_tests_were(self, pool: RunnerPool) -> interruption.Interrupt | None:
        """After Ctrl-C stopped the workers: where the longest-running test of a spawned worker
        was, as its worker reported when the interrupt reached it (a spawned worker has no
        fault file for its stacks); None if none reported one.  Nothing else that arrived is
        replayed, as after a forked worker's stop."""
        self.stopped_at = {}
        try:
            pool.take_events()
            by_nodeid = {self._nodeid(item): where for item, where in self.stopped_at.items()}
        finally:
            self.stopped_at = None
        slowest_first = [entry.nodeid for entry in self.slow.unfinished]
        return next((by_nodeid[nodeid] for nodeid in slowest_first if nodeid in by_nodeid), None)

    def _stop_as_interrupted(self, live: list[LiveWorker]) -> None:
        """Ctrl-C: each local worker's test interrupted and its fixtures torn down, as a serial
        run's are, before the pool kills what is left (workerstop).  A spawned worker gets the
        signal through its execnet bridge (gateway); a remote one is killed at once."""
        self.board.request_stop()  # a test that swallows the interrupt is its worker's last
        stoppable = self.options.stoppable_slots()
        local = {worker.pid: worker.name for worker in live if worker.slot in stoppable}
        left = workerstop.stop_workers(list(local))
        if left:
            names = ", ".join(local[pid] for pid in left)
            self.console.say(
                f"poolrun: {names} still tearing fixtures down {workerstop.STOP_GRACE:g}s "
                "after the interrupt: killed"
            )

    def _forked(self, live: list[LiveWorker]) -> list[LiveWorker]:
        """The live workers this process forked: only they write their stacks to a fault file
        (a spawned one is behind an execnet gateway)."""
        return [worker for worker in live if worker.slot < self.options.forked]

    def _next_wakeup(self, live: list[LiveWorker]) -> float | None:
        return earliest(self.timeouts.until_next_deadline(live), self.slow.until_next_notice(live))

    def _nodeid(self, item: int) -> str:
        return self.items[item].nodeid

    def _basetemp(self) -> Path | None:
        factory: Any = getattr(self.config, "_tmp_path_factory", None)
        if factory is None:
            return None
        base: Path = factory.getbasetemp()
        return base

    def _submit(self, chunk: list[int], handed_back: bool = False) -> None:
        """Send ``chunk`` out; ``handed_back`` (items a worker did not get to run, or ran
        into a crash) goes ahead of the chunks waiting, which come after it in the plan."""
        assert self.pool is not None
        self.pool.apply_async(
            itemrunner.run_chunk,
            (chunk, not self._is_long_test(chunk)),
            callback=self._chunk_done,
            error_callback=partial(self._chunk_failed, self.ledger.dispatched(chunk), chunk),
            ahead=handed_back,
        )

    def _is_long_test(self, chunk: list[int]) -> bool:
        """A chunk of one test known to be long runs at once, not held (see run_chunk)."""
        if len(chunk) != 1:
            return False
        seconds = self.durations.get(self.items[chunk[0]].nodeid)
        return seconds is not None and seconds >= scheduling.MIN_CHUNK_SECONDS

    def _stop(self) -> None:
        """-x, --maxfail or a plugin asked to stop: no new item starts anywhere."""
        if self.replayer.stop():
            self._halt()

    def _halt(self) -> None:
        self.board.request_stop()
        assert self.pool is not None
        self.pool.cancel_queued()

    # ----------------------------------------------------------------------------- callbacks

    def _on_event(self, worker: str, batch: tuple[bytes, ...]) -> None:
        for record in batch:
            self._on_worker_event(worker, events.decode(record))

    def _on_worker_event(self, worker: str, event: events.WorkerEvent) -> None:
        if self.stopped_at is not None:  # Ctrl-C stopped the workers: only where tests were
            if isinstance(event, events.ItemAborted) and event.interrupt is not None:
                self.stopped_at[event.item] = event.interrupt
            return
        if isinstance(event, events.ItemStarted):
            self.ledger.started(worker, event.item)
        elif isinstance(event, events.ItemFinished):
            if self.ledger.is_done(event.item):
                return  # reported already (its record came twice): a test is reported once
            self.ledger.finished(worker, event.item)
            self.replayer.finished(event)
        elif isinstance(event, events.CaptureFiles):
            self.postmortem.keep_capture_files(worker, event)
        elif isinstance(event, events.ItemAborted):
            self.ledger.aborted(worker, event)
            replay = partial(self.replayer.replay, event.recorded, event.item)
            if event.interrupt is not None and self.interrupted is None:
                # No test starts any more; the tests that ran before it are still reported.
                self.interrupted, self.interrupted_item = event.interrupt, event.item
                self._halt()
                self.replayer.interrupted_by(event.item, replay)
            else:
                replay()  # at once: the run stops now (INTERNALERROR)
        elif isinstance(event, events.SessionExit):
            self.ledger.finished(worker, event.item)
            self.replayer.in_order(event.item, partial(self._exit_session, event))
        elif isinstance(event, events.LooseEvents):
            self.replayer.replay(event.events)
        elif isinstance(event, events.WorkerOutput):
            self.nodes.received(worker, event.output)
        elif isinstance(event, events.TerminalOutput):
            self.console.show(worker, event)
        elif isinstance(event, events.JunitRecords):
            junitrecords.apply(self.config, event)
        else:
            raise TypeError(f"unknown event from worker {worker}: {event!r}")

    def _exit_session(self, event: events.SessionExit) -> None:
        self.replayer.replay(event.recorded, event.item)
        self.session_exit = event
        self._stop()

    def _chunk_done(self, result: tuple[str, int | None] | Retired) -> None:
        if isinstance(result, Retired):
            # The worker leaves; what it did not run goes out again once it has ended, ahead
            # of the chunks it had been sent meanwhile, which the pool then puts back first.
            self.retired_with[result.worker] = list(result.returned)
            return
        worker, held = result
        self.ledger.hold(worker, held)

    def _chunk_failed(self, dispatch: int, chunk: list[int], error: BaseException) -> None:
        if self.replayer.stopped or isinstance(error, TaskCancelledError):
            return
        if isinstance(error, Exception) and not isinstance(error, WorkerLostError):
            # Not a test's doing: pytest's protocol itself failed in the worker (a plugin hook
            # raised, a report could not be sent).  A serial run would end with INTERNALERROR.
            self.internal_error = error
            self._stop()
            return
        lost, unstarted = self.ledger.after_death(dispatch, chunk)
        for index in lost:
            self.ledger.done(index)
            worker = error.worker if isinstance(error, WorkerLostError) else "its worker"
            why = (
                f"the test ran, but its report was lost when worker {worker} died; it is not "
                f"run again (it ran once already)\n\n{error}"
            )
            self.replayer.report_crash(index, self.replayer.crash_report(index, why))
        if isinstance(error, PoolExhaustedError):
            for index in unstarted:
                self.ledger.done(index)
                self.replayer.report_not_run(index, str(error))
            return
        if unstarted:
            self._submit(unstarted, handed_back=True)

    def _replay_journal(self, ended: WorkerExit) -> int | None:
        """Replay what the dead worker journaled and did not send; the item of a torn record."""
        records, torn = events.split_records(self.journal.read(ended.slot))
        for item, record in records:
            if not self.ledger.is_done(item):
                self._on_worker_event(ended.name, events.decode(record))
        return torn

    def _salvage_journals(self, live: list[LiveWorker]) -> None:
        """On Ctrl-C: report the tests that finished and whose results had not come yet (a
        worker sends a batch after a test, once it is due, so a quick test's result waits
        while the next test runs), as a serial run reports every test before the interrupted
        one; then what waited for an earlier test that will not finish (collection order)."""
        for worker in live:
            records, _ = events.split_records(self.journal.read(worker.slot))
            for item, record in records:
                if not self.ledger.is_done(item):
                    self._on_worker_event(worker.name, events.decode(record))
        if self.items:
            self.replayer.release_through(len(self.items) - 1)

    def _on_worker_exit(self, ended: WorkerExit) -> None:
        if ended.setup_error is not None:
            self.console.say(f"poolrun: {_setup_failure(ended.name, ended.setup_error)}")
        torn = self._replay_journal(ended)
        left = self.ledger.ended(ended.name, ended.slot, ended.pid)
        overdue = self.timeouts.take(ended.name)
        aborted = left.aborted
        if aborted is not None and aborted.interrupt is None and self.internal_error is None:
            # pytest's protocol raised while the test ran (a plugin's hook), here in the item a
            # worker held to its end: serially that is an INTERNALERROR, as in a chunk's item.
            nodeid = self.items[aborted.item].nodeid
            self.internal_error = RuntimeError(
                f"pytest's protocol failed in worker {ended.name} while it ran {nodeid}:\n"
                f"{aborted.description}"
            )
            self._stop()
        if left.running is None or aborted is not None:
            # Nothing ran, or a test interrupted the run, or pytest's protocol failed while
            # the test ran (INTERNALERROR): serially it gets no report either.
            self.postmortem.capture_sections(ended.name)  # closes the files
        else:
            overran = None if overdue is None else self.items[overdue.item].nodeid
            why = self.postmortem.crash_reason(ended, left, overdue, overran, torn)
            sections = self.postmortem.capture_sections(ended.name)
            report = self.replayer.crash_report(left.running, why, sections)
            self._handle_crash_item(left.running, ended.name, report)
            self.replayer.report_crash(left.running, report)
        returned = self.ledger.unstarted(self.retired_with.pop(ended.name, []))
        if returned and not self.replayer.stopped:
            self._submit(returned, handed_back=True)
        if left.held is not None and not self.replayer.stopped:
            self._submit([left.held], handed_back=True)  # it comes before what was returned
        node = self.nodes.down(ended.name, None if ended.expected else ended.describe())
        adapters.worker_ended(self.config, node.workeroutput if node.reported else None)

    def _handle_crash_item(self, item: int, worker: str, report: pytest.TestReport) -> None:
        """pytest-xdist's ``pytest_handlecrashitem``: a plugin (pytest-rerunfailures) may turn
        the crash into a rerun, through ``mark_test_pending``; the item then runs again."""
        if not xdist_hooks_present(self.config) or self.replayer.stopped:
            return
        nodeid = self.items[item].nodeid

        def mark_test_pending(crashed: str) -> None:
            if crashed != nodeid:
                raise ValueError(f"{crashed} is not the test that crashed ({nodeid})")
            self.ledger.requeue(item)
            self._submit([item], handed_back=True)

        scheduler = SimpleNamespace(config=self.config, mark_test_pending=mark_test_pending)
        # The node only while the hook runs: pytest prints a node's worker info under a report
        # that keeps one, which this runner's crash reports do not show.
        report.node = self.nodes.node(worker)  # type: ignore[attr-defined]
        try:
            self.config.hook.pytest_handlecrashitem(
                crashitem=nodeid, report=report, sched=scheduler
            )
        finally:
            del report.node


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


def _setup_failure(worker: str, error: BaseException) -> str:
    """Why a worker could not start.  This plugin's own errors say it in their text; another's
    (a plugin's ``pytest_configure`` raising in a fresh worker) gets its type and the worker's
    traceback, as a serial run would show it."""
    if type(error).__module__.startswith(f"{__package__}."):
        return str(error)
    text = f"worker {worker} could not start: {type(error).__name__}: {error}"
    if isinstance(error.__cause__, RemoteTraceback):
        text += f"\n{error.__cause__}"
    return text
