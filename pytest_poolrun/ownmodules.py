"""This package's own modules load as Python loads any module, not through pytest's rewriter.

Data flow, in every process that imports the package (``install``, from ``__init__``)::

    install() ─▶ a PlainSubmodules finder, first on sys.meta_path (once per process)
    import pytest_poolrun.<module> ─▶ PlainSubmodules.find_spec ─▶ the spec of Python's own path
        finder: the module's compiled bytecode, from __pycache__ as for any installed module
    any other import ─▶ None: the finders after it decide, pytest's assertion rewriter among them

Why: pytest rewrites the assertions of every module of an installed plugin's distribution (and of
a plugin named by ``-p``), so that a helper's failed assertion shows its values.  This package's
assertions check its own invariants, so rewriting them shows a user nothing.  Yet the rewriter
reads, parses and compiles a module again whenever it cannot keep the result, which is every
pytest start where no bytecode is written (``PYTHONDONTWRITEBYTECODE``, a read-only
site-packages).  Summed by ``python -X importtime`` over this package's modules, with a regular
install: 110 ms of a ``--pool`` run through the rewriter, 16 ms from bytecode; 16 ms and 4 ms of
a serial run, which loads the plugin's modules only.  The package itself (``__init__``) and this
module are still read by the rewriter, which finds ``PYTEST_DONT_REWRITE`` in their docstrings
and changes nothing in them.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

PACKAGE = __name__.rpartition(".")[0]


class PlainSubmodules:
    """Finds this package's submodules as Python's path finder does, before anyone else.

    A meta path finder by its ``find_spec`` alone: ``importlib.abc`` would cost a process that
    only wants a ``Pool`` 7 ms to import.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None or not fullname.startswith(PACKAGE + "."):
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, path, target)


def install() -> None:
    """Put a ``PlainSubmodules`` first on ``sys.meta_path``, unless one is there already."""
    if not any(isinstance(finder, PlainSubmodules) for finder in sys.meta_path):
        sys.meta_path.insert(0, PlainSubmodules())
