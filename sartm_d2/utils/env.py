"""The process environment of the command lines (like detectron2's ``utils/env.py``).

:func:`import_user_module` serves ``--register MODULE`` of ``train_net.py`` (``sartm_d2.engine.setup``),
``demo/demo.py`` and ``datasets/check.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

__all__ = ["import_user_module"]


def import_user_module(module: str) -> None:
    """Import ``module`` (a dotted name, or a path to a ``.py`` file) so that its registrations run.

    The ``--register MODULE`` of train_net.py, demo/demo.py and datasets/check.py: a user's own
    datasets (or parts) are registered in every process that needs them, without editing sartm_d2.
    A module is imported once per process (a file already imported from the same path is not run again,
    so its registrations do not collide with themselves).
    """
    if module.endswith(".py") or os.sep in module:
        path = os.path.abspath(module)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--register {module}: no such file {path!r}.")
        name = os.path.splitext(os.path.basename(path))[0]
        loaded = sys.modules.get(name)
        if loaded is not None and os.path.abspath(getattr(loaded, "__file__", None) or "") == path:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return
    # A script's own folder, not the current directory, is first on sys.path; the user's module is
    # usually in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    importlib.import_module(module)

