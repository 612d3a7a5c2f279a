"""Imports the app named by ``--app`` (``module`` or ``module:attribute``); a fresh import on reload.

The app is the module holding the TaskManager, found by ``cabbage.apps`` (as ``cabbage defer
--app`` and ``cabbage periodic list --app`` find it). On reload (HUP) the app's own modules
are taken out of ``sys.modules`` and imported again from disk: the module's package, and
every module first imported with it that does not live in the standard library or
site-packages (libraries are kept: upgrading one needs a restart). A failed fresh import puts
the previous modules back, so the running app is untouched.

>>> app = import_app("examples.tasks")
>>> app.task_manager
<TaskManager PostgresJobStore tasks=3>
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import site
import sys
import sysconfig
import types

from cabbage import TaskManager, apps
from cabbage.exceptions import AppImportError

# Never renewed, wherever they are installed (an editable install lives outside site-packages):
# a second copy of cabbage would hold a second set of store classes and fork hooks.
KEPT_PACKAGES = ("cabbage", "supervisor")


@dataclasses.dataclass(frozen=True)
class LoadedApp:
    """An imported app: the spec it was named by, its TaskManager, and the modules a reload renews."""

    spec: str
    task_manager: TaskManager
    module_names: tuple[str, ...]


def import_app(spec: str) -> LoadedApp:
    """Imports ``module[:attribute]`` and finds its TaskManager; AppImportError says what went wrong."""
    module_name = spec.partition(":")[0]
    already_loaded = set(sys.modules)
    module, task_manager = apps.import_task_manager(spec)
    top_package = module_name.partition(".")[0]
    renewed = sorted(
        name
        for name in set(sys.modules) - already_loaded
        if name == top_package or name.startswith(top_package + ".") or _is_project_module(sys.modules[name])
    )
    return LoadedApp(spec, task_manager, tuple(renewed))


def reimport_app(app: LoadedApp) -> LoadedApp:
    """A fresh import of ``app`` from disk; on failure the previous modules are restored."""
    previous = {name: sys.modules.pop(name) for name in app.module_names if name in sys.modules}
    importlib.invalidate_caches()  # the finders cache directory listings: see new files
    try:
        return import_app(app.spec)
    except AppImportError:
        for name in app.module_names:
            sys.modules.pop(name, None)  # half-imported new versions
        sys.modules.update(previous)
        raise


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    found.update(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.USER_SITE:
        found.add(site.USER_SITE)
    return tuple(os.path.realpath(path) + os.sep for path in found)


def _is_project_module(module: types.ModuleType | None) -> bool:
    """A pure-Python module outside the standard library and site-packages: the user's code."""
    if module is None or module.__name__.partition(".")[0] in KEPT_PACKAGES:
        return False
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return False  # built in, a C extension, or a namespace package
    return not os.path.realpath(path).startswith(_library_dirs())
