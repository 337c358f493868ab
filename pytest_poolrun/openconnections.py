"""Which connections, open in this process, would forked workers share?

Data flow, in the controller, once, when the run decides how its local workers start::

    plugin._start_method ─▶ shared_connections()
        every file descriptor of /proc/self/fd that is a socket, not standard input, output or
        error (nor a copy of one) ─▶ wrapped without a copy, asked its kind and its peer, let go
            ├─ a connected stream to an address (TCP, or a Unix socket with a name) ─▶ listed
            └─ anything else (listening, datagram, a socket pair, not connected) ─▶ skipped
    [] : the workers may fork          [Connection(fd, peer), …] : the run spawns them, and its
                                        header names the first one

**Why.**  A test module may connect at its import: a database client, a message broker, a
Docker client's keep-alive connection.  Forked after collection, every worker holds the same
connection as the controller, and two workers' requests interleave on one stream, so replies go
to the wrong worker, the protocol breaks, or a worker waits for an answer another one read.
Serially there is one user of it; under pytest-xdist each worker imports the module and
connects for itself.  Spawned workers do what xdist's do.

**What is left alone.**  Listening sockets (no worker accepts on the controller's), datagram
sockets (each datagram travels whole), unnamed socket pairs (an event loop's wake-up pair, made
at import by asyncio), and standard streams that are sockets (a service manager's log stream),
which every worker is meant to share.  Elsewhere than Linux nothing is listed: there is no
``/proc/self/fd`` to read (macOS spawns its workers anyway; a BSD forks, connections or not).
"""

from __future__ import annotations

import os
import socket
import stat
from typing import NamedTuple

FD_DIR = "/proc/self/fd"
STANDARD_STREAMS = (0, 1, 2)
_STREAM_TYPES = (socket.SOCK_STREAM, getattr(socket, "SOCK_SEQPACKET", socket.SOCK_STREAM))
_ADDRESS_FAMILIES = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", socket.AF_INET))


class Connection(NamedTuple):
    """A connected stream socket this process holds: its descriptor and whom it talks to."""

    fd: int
    peer: str

    def describe(self) -> str:
        return f"a connection to {self.peer} (file descriptor {self.fd})"


def shared_connections() -> list[Connection]:
    """This process's connected stream sockets with an address at the other end, in descriptor
    order; standard streams (and their copies) left out.  Empty where it cannot be known."""
    try:
        names = os.listdir(FD_DIR)
    except OSError:
        return []
    standard = _socket_inodes(STANDARD_STREAMS)
    found = []
    for fd in sorted(int(name) for name in names if name.isdigit()):
        inode = _socket_inode(fd)
        if inode is None or inode in standard:
            continue
        peer = _peer(fd)
        if peer is not None:
            found.append(Connection(fd, peer))
    return found


def _socket_inodes(fds: tuple[int, ...]) -> set[int]:
    return {inode for inode in map(_socket_inode, fds) if inode is not None}


def _socket_inode(fd: int) -> int | None:
    try:
        status = os.fstat(fd)
    except OSError:  # closed meanwhile (the listing's own descriptor among them)
        return None
    return status.st_ino if stat.S_ISSOCK(status.st_mode) else None


def _peer(fd: int) -> str | None:
    """Whom the stream socket ``fd`` is connected to, as a user would name it; None if it is
    not a connected stream to an address."""
    try:
        sock = socket.socket(fileno=fd)  # the same descriptor, not a copy
    except OSError:
        return None
    try:
        if sock.family not in _ADDRESS_FAMILIES or sock.type not in _STREAM_TYPES:
            return None
        try:
            address = sock.getpeername()
        except OSError:  # listening, or not connected
            return None
    finally:
        sock.detach()  # the descriptor stays open: it is not ours to close
    return _address_text(address)


def _address_text(address: object) -> str | None:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):  # an abstract Unix name, or one Python could not decode
        address = address.decode(errors="backslashreplace")
    if isinstance(address, str) and address:
        return address.replace("\0", "@", 1) if address.startswith("\0") else address
    return None  # an unnamed peer: a socket pair
