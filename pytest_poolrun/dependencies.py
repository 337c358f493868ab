"""Tests tied to the tests they depend on (pytest-dependency), so that one worker runs them.

Data flow, in the controller before the run (and before a shard is chosen)::

    the collected items, pytest-dependency's ``dependency`` marks and its ``automark_dependency``
        ─▶ ties(config, items, nodeids) ─▶ one key per item, or None: a test whose mark names
           others in ``depends`` shares a key with each named test found in the mark's scope,
           and so with everything those are tied to in turn
        ─▶ scheduling.ItemInfo.tie: the items of one key go to one worker (one shard), in the
           order the session runs them

**Why.**  pytest-dependency records each marked test's outcome in the process that ran it, and
skips a test whose dependencies it holds no passing record of.  A dependency that ran on the
other worker is unknown there: the dependent test was skipped ("test_b depends on test_a")
where a serial run passed it (pytest-xdist skips it too, unless its whole module goes to one
worker and the dependency is in that module).  Tied, the tests give the serial verdict in every
distribution mode; a dependency that fails still skips its dependents, as serially.

**Names** are pytest-dependency's: the mark's ``name=`` where given, else the node id (session
and package scope), the node id after the module (module scope, the default), or after the
class (class scope).  A name that matches no collected test ties nothing: the dependent test is
skipped as in a serial run.  Dependencies declared at run time (``depends(request, [...])``)
cannot be seen before the run; ``--pool-dist module`` keeps a module's tests together for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from pytest_poolrun.disjointsets import DisjointSets
from pytest_poolrun.loadedplugins import module_loaded

PLUGIN_MODULE = "pytest_dependency"
MARK = "dependency"
AUTOMARK_INI = "automark_dependency"
DEFAULT_SCOPE = "module"
# The node class whose subtree holds the tests a name can refer to, per scope.
SCOPE_NODES: dict[str, type[pytest.Collector]] = {
    "session": pytest.Session,
    "package": pytest.Package,
    "module": pytest.Module,
    "class": pytest.Class,
}


def ties(
    config: pytest.Config, items: Sequence[pytest.Item], nodeids: Sequence[str]
) -> list[str | None] | None:
    """A key per item (None where the item is tied to no other), or None for no tie at all."""
    if not module_loaded(config, PLUGIN_MODULE):
        return None
    marks = [item.get_closest_marker(MARK) for item in items]
    if not any(mark is not None and mark.kwargs.get("depends") for mark in marks):
        return None
    automark = bool(config.getini(AUTOMARK_INI))
    recorded = [index for index, mark in enumerate(marks) if automark or mark is not None]
    sets = DisjointSets(len(items))
    named: dict[str, dict[tuple[int, str], list[int]]] = {}
    for index, mark in enumerate(marks):
        depends = mark.kwargs.get("depends") if mark is not None else None
        if not depends or mark is None:
            continue
        scope = str(mark.kwargs.get("scope", DEFAULT_SCOPE))
        node = _scope_node(items[index], scope)
        if node is None:
            continue
        if scope not in named:
            named[scope] = _names_in(scope, items, nodeids, marks, recorded)
        for name in depends:
            for other in named[scope].get((id(node), str(name)), ()):
                sets.join(index, other)
    # A tie's key is its first test's node id.
    leaders = [sets.leader(index) for index in range(len(items))]
    sizes = Counter(leaders)
    return [nodeids[leader] if sizes[leader] > 1 else None for leader in leaders]


def _scope_node(item: pytest.Item, scope: str) -> Any:
    node_class = SCOPE_NODES.get(scope)
    return None if node_class is None else item.getparent(node_class)


def _names_in(
    scope: str,
    items: Sequence[pytest.Item],
    nodeids: Sequence[str],
    marks: Sequence[pytest.Mark | None],
    recorded: Sequence[int],
) -> dict[tuple[int, str], list[int]]:
    """(the scope's node, a name) → the recorded items of that node known by that name."""
    found: dict[tuple[int, str], list[int]] = {}
    for index in recorded:
        node = _scope_node(items[index], scope)
        if node is None:
            continue
        mark = marks[index]
        custom = mark.kwargs.get("name") if mark is not None else None
        name = str(custom) if custom else _default_name(scope, nodeids[index])
        found.setdefault((id(node), name), []).append(index)
    return found


def _default_name(scope: str, nodeid: str) -> str:
    """The name pytest-dependency files a test's outcome under when its mark gives none."""
    if scope in ("session", "package"):
        return nodeid
    parts = nodeid.split("::", 2 if scope == "class" else 1)
    return parts[-1]
