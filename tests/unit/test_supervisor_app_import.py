"""Importing --app: the TaskManager found, every error message, and the fresh import of a reload."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest

from cabbage import TaskManager
from cabbage.exceptions import AppImportError
from supervisor.app_import import LoadedApp, import_app, reimport_app

IN_MEMORY = "import cabbage\nfrom cabbage.testing import InMemoryJobStore\n"


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Writes a module under tmp_path (on sys.path); every module it made is forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> None:
        path = tmp_path.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if str(parent) != ".":
                (tmp_path / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
        written.append(name.partition(".")[0])

    yield write
    for name in list(sys.modules):
        if name.partition(".")[0] in written:
            del sys.modules[name]


def test_the_module_task_manager_is_found(write_module: Callable[[str, str], None]) -> None:
    write_module("app_one", IN_MEMORY + "task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)\n")
    app = import_app("app_one")
    assert isinstance(app.task_manager, TaskManager)
    assert app.task_manager is sys.modules["app_one"].task_manager
    assert app.spec == "app_one"


def test_the_only_task_manager_is_found_whatever_its_name(write_module: Callable[[str, str], None]) -> None:
    write_module("app_two", IN_MEMORY + "tm = cabbage.TaskManager(store_class=InMemoryJobStore)\n")
    assert import_app("app_two").task_manager is sys.modules["app_two"].tm


def test_an_attribute_names_it(write_module: Callable[[str, str], None]) -> None:
    write_module(
        "proj_three.tasks",
        IN_MEMORY + "class Apps:\n    jobs = cabbage.TaskManager(store_class=InMemoryJobStore)\n",
    )
    assert import_app("proj_three.tasks:Apps.jobs").task_manager is sys.modules["proj_three.tasks"].Apps.jobs


@pytest.mark.parametrize(
    ("spec", "source", "message"),
    [
        ("does.not.exist", None, "cannot import app 'does.not.exist': No module named 'does'"),
        ("app_bad_import", "import no_such_library_here\n", "cannot import app 'app_bad_import': No module named 'no_such_library_here'"),
        ("app_raises", "1 / 0\n", "cannot import app 'app_raises': ZeroDivisionError: division by zero"),
        ("app_syntax", "def (:\n", "cannot import app 'app_syntax': SyntaxError: invalid syntax (app_syntax.py, line 1)"),
        ("app_none", "x = 1\n", "app 'app_none' holds no cabbage.TaskManager; name one, as in app_none:task_manager"),
        (
            "app_two_managers",
            IN_MEMORY + "b = cabbage.TaskManager(store_class=InMemoryJobStore)\na = cabbage.TaskManager(store_class=InMemoryJobStore)\n",
            "app 'app_two_managers' holds several TaskManagers (a, b); name one, as in app_two_managers:a",
        ),
        ("app_attr:tm", "x = 1\n", "app 'app_attr:tm' has no attribute 'tm'; name the TaskManager, as in app_attr:task_manager"),
        ("app_wrong:x", "x = {}\n", "app 'app_wrong:x' is a dict, not a cabbage.TaskManager"),
    ],
)
def test_each_failure_says_what_is_wrong(
    write_module: Callable[[str, str], None], spec: str, source: str | None, message: str
) -> None:
    if source is not None:
        write_module(spec.partition(":")[0], source)
    with pytest.raises(AppImportError) as refused:
        import_app(spec)
    assert str(refused.value) == message
    assert isinstance(refused.value, ImportError)


MANAGER_V1 = IN_MEMORY + "import app_reload.helpers\ntask_manager = cabbage.TaskManager(store_class=InMemoryJobStore)\nVERSION = 1\n"


def test_a_reload_imports_the_changed_modules_from_disk(write_module: Callable[[str, str], None]) -> None:
    write_module("app_reload.helpers", "WORD = 'old'\n")
    write_module("app_reload.tasks", MANAGER_V1)
    app = import_app("app_reload.tasks")
    assert {"app_reload", "app_reload.tasks", "app_reload.helpers"} <= set(app.module_names)
    assert not any(name.partition(".")[0] in ("cabbage", "supervisor") for name in app.module_names)
    write_module("app_reload.helpers", "WORD = 'brand new'\n")  # a new size: a stale .pyc cannot match
    write_module("app_reload.tasks", MANAGER_V1.replace("VERSION = 1", "VERSION = 22"))
    fresh = reimport_app(app)
    assert sys.modules["app_reload.tasks"].VERSION == 22
    assert sys.modules["app_reload.helpers"].WORD == "brand new"
    assert fresh.task_manager is not app.task_manager


def test_a_failed_reload_keeps_the_running_modules(write_module: Callable[[str, str], None]) -> None:
    write_module("app_broken.helpers", "WORD = 'old'\n")
    write_module("app_broken.tasks", MANAGER_V1.replace("app_reload", "app_broken"))
    app = import_app("app_broken.tasks")
    running = {name: sys.modules[name] for name in app.module_names}
    write_module("app_broken.tasks", "import app_broken.helpers\nraise RuntimeError('half-written deploy')\n")
    with pytest.raises(AppImportError, match=r"^cannot import app 'app_broken.tasks': RuntimeError: half-written deploy$"):
        reimport_app(app)
    assert {name: sys.modules[name] for name in app.module_names} == running
    assert isinstance(app, LoadedApp) and sys.modules["app_broken.tasks"].task_manager is app.task_manager
