"""The wire between a pool's controller and its workers: typed messages in length-prefixed frames.

Data flow::

    controller (non-blocking)                      worker (blocking)
    ControllerEnd.send(Task|Shutdown) ── frame ──▶ WorkerEnd.recv()
    ControllerEnd.feed() ◀──────────── frame ──── WorkerEnd.send(Ready, then Event|Result|…)

A frame is an 8-byte big-endian length followed by a pickled message.  Messages are a small closed
set of NamedTuples; the payloads they carry (functions, arguments, results, events) are already
pickled bytes, so the envelope itself always pickles with the standard library.

The controller's end never blocks: ``send`` appends to an outgoing buffer that the pool's event
loop flushes when the socket is writable, and ``feed`` decodes whatever bytes have arrived.  A
blocking write from the controller could deadlock with a worker that is itself blocked writing a
large result back.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import BinaryIO, NamedTuple, Union

HEADER = struct.Struct("!Q")
# Large enough that one recv usually drains a burst of small reports, small enough to stay cheap.
RECV_SIZE = 256 * 1024


class Task(NamedTuple):
    """Run ``function(*args)``: both are pickled blobs (cloudpickle, decoded by the worker)."""

    task_id: int
    function: bytes
    args: bytes


class Shutdown(NamedTuple):
    """Finish after the tasks already sent, then exit."""


class Event(NamedTuple):
    """Something a running task emitted before its result (see ``poolworker.emit``)."""

    task_id: int
    payload: bytes


class Result(NamedTuple):
    """A task's outcome: ``ok`` with a pickled value, or not ``ok`` with a pickled error.

    ``seconds`` is how long the task ran in the worker; the pool sizes its prefetch by it.
    """

    task_id: int
    ok: bool
    payload: bytes
    seconds: float


class Retiring(NamedTuple):
    """The worker reached ``maxtasksperchild`` and will exit; not a crash."""


class Ready(NamedTuple):
    """The worker has started and run the initializer: it takes tasks from now on."""


class SetupFailed(NamedTuple):
    """The pool's initializer raised (pickled error); the worker exits and is not replaced."""

    payload: bytes


ToWorker = Union[Task, Shutdown]
ToController = Union[Ready, Event, Result, Retiring, SetupFailed]


def encode(message: ToWorker | ToController) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def read_frame(stream: BinaryIO) -> bytes | None:
    """The body of the next frame from a blocking stream, or None once the sender has gone.

    The one reader of frames on the blocking side: the worker, and the execnet bridge relaying
    frames to its gateway.
    """
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


class WorkerEnd:
    """The worker's side of the socket: plain blocking reads and writes."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._file = sock.makefile("rb")

    def send(self, message: ToController) -> None:
        self.sock.sendall(encode(message))

    def recv(self) -> ToWorker | None:
        """The next message, or None once the controller has gone away."""
        body = read_frame(self._file)
        if body is None:
            return None
        message: ToWorker = pickle.loads(body)
        return message

    def close(self) -> None:
        self._file.close()
        self.sock.close()


class ControllerEnd:
    """The controller's side of the socket: buffered, never blocking."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._incoming = bytearray()
        self._outgoing = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: ToWorker) -> None:
        """Queue ``message``; it leaves on the next ``flush`` (one system call for a batch)."""
        self._outgoing += encode(message)

    @property
    def wants_write(self) -> bool:
        return bool(self._outgoing) and not self.closed

    def flush(self) -> None:
        """Write as much of the outgoing buffer as the socket takes now."""
        while self._outgoing and not self.closed:
            try:
                sent = self.sock.send(self._outgoing)
            except BlockingIOError:
                return
            except OSError:
                # The worker is gone; its death is noticed through its process sentinel.
                self._outgoing.clear()
                return
            del self._outgoing[:sent]

    def feed(self) -> tuple[list[ToController], bool]:
        """Read what has arrived: the complete messages, and whether the worker hung up."""
        eof = False
        while True:
            try:
                chunk = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            self._incoming += chunk
            if len(chunk) < RECV_SIZE:
                break
        messages: list[ToController] = []
        view = self._incoming
        offset = 0
        while len(view) - offset >= HEADER.size:
            (size,) = HEADER.unpack_from(view, offset)
            end = offset + HEADER.size + size
            if len(view) < end:
                break
            messages.append(pickle.loads(view[offset + HEADER.size : end]))
            offset = end
        del self._incoming[:offset]
        return messages, eof

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
