"""execnet worker specs as users write them: ``[N*]SPEC``, checked and expanded.

Data flow: ``--pool-tx``, ``--pool-fixture-tx`` (argparse types), the ``pool_fixture_tx`` ini
key (``check_ini``) and ``Pool(tx=...)`` ─▶ ``problem(text)``: why a spec is not one, or None
─▶ ``expand`` (``["2*popen"]`` ─▶ ``["popen", "popen"]``) ─▶ one worker slot each.

A spec must name a gateway type execnet knows; anything else would only fail later, as every
worker "disconnected", far from the typo.  Kept apart from ``gateway`` so that checking an
option imports nothing of the pool.
"""

from __future__ import annotations

import argparse

# The gateway types execnet knows: a spec must name one.
GATEWAY_TYPES = frozenset({"popen", "ssh", "socket", "vagrant_ssh"})


def problem(text: str) -> str | None:
    """Why ``text`` is not a ``[N*]SPEC`` naming a gateway type; None if it is one."""
    count, star, spec = text.partition("*")
    if not (star and count.isdigit()):
        count, spec = "1", text
    keys = {part.partition("=")[0] for part in spec.split("//")}
    if int(count) >= 1 and keys & GATEWAY_TYPES:
        return None
    return (
        f"{text!r} is not a gateway; use [N*]popen, [N*]ssh=HOST or [N*]socket=HOST:PORT, "
        "each optionally followed by //python=..., //chdir=..."
    )


def option_value(text: str) -> str:
    """An argparse type for the command line's specs."""
    found = problem(text)
    if found is not None:
        raise argparse.ArgumentTypeError(found)
    return text


option_value.__name__ = "a gateway"  # argparse names the type in some messages


def expand(specs: list[str]) -> list[str]:
    """``["2*popen", "socket=h:1"]`` → ``["popen", "popen", "socket=h:1"]``."""
    expanded: list[str] = []
    for spec in specs:
        count, star, rest = spec.partition("*")
        if star and count.isdigit():
            expanded.extend([rest] * int(count))
        else:
            expanded.append(spec)
    return expanded
