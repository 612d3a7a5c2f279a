"""Finding an app's TaskManager from ``module`` or ``module:attribute``, for the commands that import apps.

Without ``:attribute``, the module's ``task_manager`` is used, else its only TaskManager.
``cabbage-supervisor --app`` (``supervisor.app_import``, which also renews the app on reload),
``cabbage defer --app`` and ``cabbage periodic list --app`` find it the same way.

>>> module, task_manager = import_task_manager("proj.tasks")
"""

from __future__ import annotations

import importlib
import types

from cabbage.exceptions import AppImportError
from cabbage.manager import TaskManager

DEFAULT_ATTRIBUTE = "task_manager"


def import_task_manager(spec: str) -> tuple[types.ModuleType, TaskManager]:
    """Imports ``module[:attribute]`` and finds its TaskManager; AppImportError says what went wrong."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the boundary around the user's import-time code
        detail = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        raise AppImportError(f"cannot import app {spec!r}: {detail}") from exc
    return module, find_task_manager(spec, module, attribute)


def find_task_manager(spec: str, module: types.ModuleType, attribute: str) -> TaskManager:
    if attribute:
        found: object = module
        for part in attribute.split("."):
            if not hasattr(found, part):
                raise AppImportError(
                    f"app {spec!r} has no attribute {attribute!r}; name the TaskManager, as in "
                    f"{module.__name__}:{DEFAULT_ATTRIBUTE}"
                )
            found = getattr(found, part)
        if not isinstance(found, TaskManager):
            raise AppImportError(f"app {spec!r} is a {type(found).__name__}, not a cabbage.TaskManager")
        return found
    default = getattr(module, DEFAULT_ATTRIBUTE, None)
    if isinstance(default, TaskManager):
        return default
    candidates = {name: value for name, value in vars(module).items() if isinstance(value, TaskManager)}
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    if not candidates:
        raise AppImportError(
            f"app {spec!r} holds no cabbage.TaskManager; name one, as in {module.__name__}:{DEFAULT_ATTRIBUTE}"
        )
    names = sorted(candidates)
    raise AppImportError(
        f"app {spec!r} holds several TaskManagers ({', '.join(names)}); name one, as in {module.__name__}:{names[0]}"
    )


__all__ = ["import_task_manager", "find_task_manager", "TaskManager", "DEFAULT_ATTRIBUTE"]
