"""How a ``--pool`` run's process ends (quickexit): what a program still gets at its exit.

Each case runs pytest in a fresh interpreter through a small program that registers an exit
handler of its own before pytest starts, as a wrapper script or a tool that runs pytest would,
and writes down what that handler and the suite's own exit code see.
"""

from __future__ import annotations

import sys

import pytest
from helpers import POOL

RUN_TIMEOUT = 60.0

# Runs pytest in its own process; an exit handler registered before pytest starts runs after
# every handler pytest and the suite register, and notes what it finds then.
PROGRAM = """
import atexit, gc, sys
notes = sys.argv[1]
frozen_at_start = gc.get_freeze_count()  # not 0 on every Python (3.12's runtime freezes some)

def note_at_exit():
    with open(notes, "a") as f:
        f.write(f"frozen objects at exit: {gc.get_freeze_count() > frozen_at_start}\\n")

atexit.register(note_at_exit)
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""

# A suite whose conftest and test module leave work for the process's exit: handlers of their
# own, and objects (in no reference cycle) whose finalizers write to the notes.
SUITE_CONFTEST = """
import atexit, os

NOTES = os.environ["EXIT_NOTES"]

def note(text, _open=open, _notes=NOTES):  # bound now: late in an exit, globals are None
    with _open(_notes, "ab") as f:  # bytes: late in an exit, codecs cannot be looked up
        f.write(text.encode() + b"\\n")

class Finalized:
    def __init__(self, name):
        self.name = name
    def __del__(self, _note=note):
        _note("finalized " + self.name)

kept_by_conftest = Finalized("the conftest's global")
atexit.register(note, "the conftest's exit handler")
"""

SUITE_TEST = """
import atexit
from conftest import Finalized, note

kept_by_module = Finalized("the test module's global")
atexit.register(note, "the test module's exit handler")

def test_passes():
    pass

def test_fails():
    assert 1 == 2
"""


def run_program(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    python: tuple[str, ...] = (),
) -> tuple[int, list[str]]:
    """Run the suite through PROGRAM; the exit code and the notes written at the exit."""
    pytester.makeconftest(SUITE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE_TEST)
    notes = pytester.path / "exit-notes.txt"
    monkeypatch.setenv("EXIT_NOTES", str(notes))
    program = pytester.path / "run_pytest.py"
    program.write_text(PROGRAM)
    ran = pytester.run(
        sys.executable,
        *python,
        str(program),
        str(notes),
        *POOL,
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        *args,
        timeout=RUN_TIMEOUT,
    )
    return ran.ret, sorted(notes.read_text().splitlines())


@pytest.mark.parametrize(
    ("python", "args", "frozen"),
    [
        pytest.param((), ("--pool", "2"), True, id="pool"),
        pytest.param((), (), False, id="serial"),
        pytest.param(("-X", "dev"), ("--pool", "2"), False, id="pool-under-X-dev"),
    ],
)
def test_a_pool_run_leaves_its_process_without_walking_the_heap_again(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    python: tuple[str, ...],
    args: tuple[str, ...],
    frozen: bool,
) -> None:
    code, notes = run_program(pytester, monkeypatch, *args, python=python)
    assert code == pytest.ExitCode.TESTS_FAILED
    assert f"frozen objects at exit: {frozen}" in notes


def test_exit_handlers_and_finalizers_of_kept_objects_run_as_serially(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial_code, serial_notes = run_program(pytester, monkeypatch)
    (pytester.path / "exit-notes.txt").unlink()
    pool_code, pool_notes = run_program(pytester, monkeypatch, "--pool", "2")
    assert pool_code == serial_code
    handlers = ["the conftest's exit handler", "the test module's exit handler"]
    finalized = ["finalized the conftest's global", "finalized the test module's global"]
    serial_seen = [note for note in serial_notes if not note.startswith("frozen")]
    assert [note for note in pool_notes if not note.startswith("frozen")] == serial_seen
    assert set(handlers) <= set(serial_seen)
    assert set(finalized) <= set(serial_seen)
