"""Whether a third-party plugin is active in this run, asked by the module that registered it.

Data flow: ``module_loaded(config, "pytest_check.plugin")`` ─▶ pytest's plugin manager lists
its registered plugins ─▶ True when one of them is that module.  A plugin installed but
turned off with ``-p no:NAME`` is not registered, so the answer follows the user's choice,
not what is installed.
"""

from __future__ import annotations

import pytest


def module_loaded(config: pytest.Config, module_name: str) -> bool:
    """Whether the module ``module_name`` is registered as a plugin in ``config``'s run."""
    return any(
        getattr(plugin, "__name__", None) == module_name
        for plugin in config.pluginmanager.get_plugins()
    )
