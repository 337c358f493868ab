"""The pool's lock and its I/O token: which of the caller threads that wait drives the I/O.

Data flow, in the caller threads (any number at once)::

    get / wait / next / join ─▶ wait_until(done) ─┬─ token free: take it ─▶ pump (manager.py),
                                                  │  release it ─▶ changed.notify_all
                                                  └─ token held: changed.wait ─▶ look again
    ready() ─▶ poll ─▶ pump(0) if the token is free, else nothing (another thread drives it)
    submit / close / ... ─▶ after_change ─▶ run_callbacks; loop.wake() if another thread holds
                                            the token, so its select sees the change
    reset / terminate / join ─▶ take_token: wake the holder, wait for it to release, hold the
                                token until release_token

**Why a token.**  The manager's loop has no thread of its own (``manager`` says why), so the
threads that wait take turns driving it.  One lock guards all of the pool's state; of the threads
waiting, one holds the token: it selects with the lock released, so that other threads submit
meanwhile, handles the batch under the lock, then runs the batch's callbacks unlocked, in arrival
order, so they may submit work.  The others wait on the condition ``changed`` (notified whenever
callbacks ran or the token was released) and take the token when it is free.  Those that must
touch the selector or the workers themselves (``reset``, ``terminate``, ``join``) take it first.
A callback that waits on the pool from the thread holding the token would wait for itself: that
raises ``RuntimeError``; any other thread simply waits.

This class knows nothing of workers or jobs: the manager gives it ``pump`` and ``stopped``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from os import getpid  # bound once: a test may patch os.getpid

from pytest_poolrun import clock
from pytest_poolrun.eventloop import LONGEST_WAIT, Callbacks, EventLoop

REENTRY_ERROR = (
    "a callback waited for a pool result: callbacks run inside the pool's event loop, in the "
    "thread that drives it, so they must return without waiting; collect results after the "
    "call that ran the callback has returned"
)


class IoToken:
    """The pool's lock, its condition, and the token of the thread driving the I/O.

    ``pump(timeout)`` is called by the token's holder, without the lock; ``stopped()`` is read
    under the lock and tells that nothing more will arrive.  It is the ``Waiter`` the results
    wait on (``results.py``).
    """

    def __init__(
        self,
        loop: EventLoop,
        callbacks: Callbacks,
        pump: Callable[[float | None], None],
        stopped: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._callbacks = callbacks
        self._pump = pump
        self._stopped = stopped
        self.owner_pid = getpid()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        # The thread that holds the token (drives the I/O), and how many others wait to take it
        # for reset, terminate or join (the holder then hands it over after its pump).
        self._pumper: int | None = None
        self._token_wanted = 0

    @property
    def terminated(self) -> bool:
        """Whether the pool has stopped: nothing more will arrive."""
        return self._stopped()

    def check_owner(self) -> None:
        if getpid() != self.owner_pid:
            raise RuntimeError(
                f"this Pool belongs to process {self.owner_pid} and reached process "
                f"{getpid()} through a fork, where it cannot work; create a new Pool here"
            )

    def after_change(self) -> None:
        """Run the callbacks a change queued; wake the thread driving the I/O, if another."""
        self.run_callbacks()
        pumper = self._pumper
        if pumper is not None and pumper != threading.get_ident():
            self._loop.wake()

    def run_callbacks(self) -> None:
        """Run the queued callbacks, unlocked; then let waiting threads look again."""
        if not self._callbacks:
            return
        with self.lock:
            batch = self._callbacks.take()
        try:
            Callbacks.run(batch)
        finally:
            with self.lock:
                self.changed.notify_all()

    def take_token(self) -> bool:
        """Become the thread driving the I/O, waking the current one; False if already it."""
        me = threading.get_ident()
        with self.lock:
            if self._pumper == me:
                return False
            self._token_wanted += 1
            try:
                while self._pumper is not None:
                    self._loop.wake()
                    self.changed.wait()
            finally:
                self._token_wanted -= 1
            self._pumper = me
            return True

    def release_token(self) -> None:
        with self.lock:
            self._pumper = None
            self.changed.notify_all()

    def poll(self) -> None:
        """Handle what has arrived without waiting, unless another call drives the I/O now."""
        with self.lock:
            if self._pumper is not None or self._stopped():
                return
            self._pumper = threading.get_ident()
        try:
            self._pump(0)
        finally:
            self.release_token()

    def wait_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``done()``; drive the I/O meanwhile whenever no other thread does."""
        deadline = None if timeout is None else clock.monotonic() + timeout
        me = threading.get_ident()
        with self.lock:
            if done():
                return True
            self.check_owner()
            if self._pumper == me:
                raise RuntimeError(REENTRY_ERROR)
        while True:
            with self.lock:
                while True:
                    if done():
                        return True
                    if self._stopped():
                        return done()
                    remaining = None if deadline is None else deadline - clock.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    if self._pumper is None and not self._token_wanted:
                        break
                    self.changed.wait(None if remaining is None else min(remaining, LONGEST_WAIT))
                self._pumper = me
            try:
                self._pump(remaining)
            finally:
                self.release_token()
