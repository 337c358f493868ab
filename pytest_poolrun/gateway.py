"""Workers behind execnet gateways (``popen``, ``ssh``, ``socket``), for the same Pool.

Data flow::

    controller (no threads)          bridge process (local)            remote interpreter
    Pool ── socket pair frames ──▶   bridge_main: frame → channel ──▶  serve_channel →
                                                                        poolworker.serve()
    Pool ◀── socket pair frames ──   channel callback → frame ◀──────  ChannelEnd.send()
    stop signal (Ctrl-C) ─────────▶   popen only: passed on ─────────▶  workerstop's handler

execnet talks to its gateways from helper threads, and a process with threads must not fork.
The controller forks a replacement whenever a local worker dies, so it never opens a gateway
itself: each execnet worker is a small local *bridge* process, started like any local worker,
that opens one gateway and relays the pool's frames both ways.  To the pool a bridge is just a
worker: when the remote side disconnects or dies, the bridge exits, and the pool handles that as
a crashed worker (its running task is reported, its queued tasks go to the others).

The remote side needs ``pytest_poolrun`` importable (installed in the interpreter that the spec
names); it runs its tasks in its main thread (execnet's ``main_thread_only`` model).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
from typing import Any

from pytest_poolrun import codec, workerstop
from pytest_poolrun.poolworker import WorkerInfo, prepare_process
from pytest_poolrun.wire import HEADER, SetupFailed, ToController, ToWorker, WorkerEnd, read_frame

# Exit code of a bridge whose remote side went away: the pool reports it like a crash.
REMOTE_LOST = 75
EXECMODEL = "main_thread_only"

_CLOSED = object()

# Runs on the remote side, sent as source by remote_exec (first, the worker's process id).
PID_SOURCE = "import os; channel.send(os.getpid())"
REMOTE_SOURCE = """
if __name__ == "__channelexec__":
    from pytest_poolrun.gateway import serve_channel
    serve_channel(channel)
"""


def with_execmodel(spec: str) -> str:
    return spec if "execmodel=" in spec else f"{spec}//execmodel={EXECMODEL}"


class ChannelEnd:
    """The remote worker's end: the same ``send``/``recv`` as ``wire.WorkerEnd``, over a channel."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def send(self, message: ToController) -> None:
        self.channel.send(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def recv(self) -> ToWorker | None:
        try:
            data = self.channel.receive()
        except Exception:  # EOFError, or execnet's own errors on a closed channel
            return None
        if data is None:
            return None
        message: ToWorker = pickle.loads(data)
        return message


def serve_channel(channel: Any) -> None:
    """Remote entry point: receive the worker's identity and setup, then serve tasks."""
    from pytest_poolrun import poolworker

    info, setup, maxtasks, cwd = channel.receive()
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    poolworker.serve(ChannelEnd(channel), WorkerInfo(*info), setup, maxtasks)


class GatewayUnreachable(ConnectionError):
    """An execnet worker's gateway could not be opened (the run's console shows the text)."""


def _pass_the_stop_on(gateway: Any) -> None:
    """Hand the controller's stop signal (workerstop) on to a popen gateway's interpreter, a
    local process: its test is interrupted and its fixtures torn down as a forked worker's are.
    The bridge then ends when that interpreter does.  Elsewhere the signal is left at its
    default, and the bridge ends at once, as does any remote worker behind it."""
    if workerstop.STOP_SIGNAL is None or not gateway.spec.popen:
        return
    worker_pid = gateway.remote_exec(PID_SOURCE).receive()

    def pass_on(signum: int, frame: object) -> None:
        try:
            os.kill(worker_pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(workerstop.STOP_SIGNAL, pass_on)


def bridge_main(
    sock: socket.socket, info: WorkerInfo, setup: bytes, maxtasks: int | None, spec: str
) -> None:
    """Entry point of a bridge process: open the gateway, then relay until either side ends."""
    prepare_process()
    import execnet

    try:
        with workerstop.held_in_new_threads():
            gateway = execnet.makegateway(with_execmodel(spec))
        _pass_the_stop_on(gateway)
        channel = gateway.remote_exec(REMOTE_SOURCE)
        # A spec that names its own directory (ssh …//chdir=…) keeps it.
        cwd = None if "chdir=" in spec else os.getcwd()
        channel.send((tuple(info), setup, maxtasks, cwd))
    except Exception as exc:
        # Tell the pool not to retry this slot: the gateway is unreachable, not crashed.
        error = GatewayUnreachable(f"cannot reach execnet worker {info.name} ({spec}): {exc}")
        WorkerEnd(sock).send(SetupFailed(codec.dump_error(error)))
        os._exit(REMOTE_LOST)
    sock.setblocking(True)
    send_lock = threading.Lock()

    def to_controller(data: Any) -> None:
        if data is _CLOSED:
            # The remote side is gone (or finished after Shutdown); end like a worker would.
            os._exit(REMOTE_LOST)
        frame = HEADER.pack(len(data)) + data
        with send_lock:
            try:
                sock.sendall(frame)
            except OSError:
                os._exit(REMOTE_LOST)

    channel.setcallback(to_controller, endmarker=_CLOSED)
    reader = sock.makefile("rb")
    while (body := read_frame(reader)) is not None:
        try:
            channel.send(body)
        except Exception:
            os._exit(REMOTE_LOST)
    # The controller hung up: let the remote side go too.
    try:
        gateway.exit()
    finally:
        os._exit(0)
