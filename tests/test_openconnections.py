"""Which sockets make a run spawn its workers: connected streams to an address, and no other."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from pytest_poolrun.openconnections import Connection, shared_connections

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def _new_connections(before: list[Connection]) -> list[Connection]:
    return [connection for connection in shared_connections() if connection not in before]


def _unix_connection(sockets: ExitStack, path: str) -> tuple[socket.socket, socket.socket]:
    """Both ends of a connection to a Unix socket listening at ``path``: client, server."""
    listener = sockets.enter_context(socket.socket(socket.AF_UNIX))
    listener.bind(path)
    listener.listen(1)
    client = sockets.enter_context(socket.socket(socket.AF_UNIX))
    client.connect(path)
    return client, sockets.enter_context(listener.accept()[0])


def test_connected_streams_are_listed_with_their_peer(sockets: ExitStack, tmp_path: Path) -> None:
    before = shared_connections()
    listener = sockets.enter_context(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    host, port = listener.getsockname()
    client = sockets.enter_context(socket.create_connection((host, port)))
    accepted = sockets.enter_context(listener.accept()[0])
    path = str(tmp_path / "service.sock")
    unix_client, _ = _unix_connection(sockets, path)

    found = _new_connections(before)

    client_port = client.getsockname()[1]
    assert found == sorted(
        [
            Connection(client.fileno(), f"127.0.0.1:{port}"),
            Connection(accepted.fileno(), f"127.0.0.1:{client_port}"),
            Connection(unix_client.fileno(), path),
        ]
    )
    assert found[0].describe() == f"a connection to {found[0].peer} (file descriptor {found[0].fd})"
    # Asking left every socket open and usable.
    client.sendall(b"still open")
    assert accepted.recv(32) == b"still open"


def test_listeners_datagrams_pairs_and_unconnected_sockets_are_not(sockets: ExitStack) -> None:
    before = shared_connections()
    listener = sockets.enter_context(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    datagram = sockets.enter_context(socket.socket(type=socket.SOCK_DGRAM))
    datagram.connect(("127.0.0.1", 9))  # a connected datagram socket has a peer, too
    for end in socket.socketpair():  # asyncio's wake-up pair
        sockets.enter_context(end)
    sockets.enter_context(socket.socket())

    assert _new_connections(before) == []


def test_standard_streams_are_shared_on_purpose(sockets: ExitStack, tmp_path: Path) -> None:
    """A service manager's log stream as standard output (and pytest's copy of it, made for
    capturing) is meant for every worker: it does not count."""
    stream, journal = _unix_connection(sockets, str(tmp_path / "journal.sock"))
    code = (
        "import os\n"
        "from pytest_poolrun.openconnections import shared_connections\n"
        "copy = os.dup(1)\n"
        "print(shared_connections(), flush=True)\n"
    )
    subprocess.run([sys.executable, "-c", code], stdout=stream.fileno(), check=True, timeout=60)
    stream.close()
    assert journal.recv(4096).decode() == "[]\n"
