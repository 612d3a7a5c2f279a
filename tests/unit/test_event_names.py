"""Every event name logged in cabbage/ and supervisor/ is documented in docs/logging.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("cabbage", "supervisor")
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg", "fatal"}
EVENT_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")


def _receiver_name(node: ast.expr) -> str:
    """`log`, `self.log`, `log.bind(...)` -> the name the logger is reached by."""
    if isinstance(node, ast.Call):
        return _receiver_name(node.func.value) if isinstance(node.func, ast.Attribute) else ""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def logged_events() -> dict[str, str]:
    """Event name -> where it is logged, for every `<logger>.<level>("event", ...)` call."""
    events: dict[str, str] = {}
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in LOG_METHODS or "log" not in _receiver_name(node.func.value).lower():
                    continue
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    events.setdefault(node.args[0].value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return events


def documented_events() -> set[str]:
    text = (ROOT / "docs" / "logging.md").read_text()
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", text))


def test_the_scan_finds_the_worker_events() -> None:
    assert {"job_started", "job_succeeded", "job_failed", "worker_started"} <= set(logged_events())


def test_every_logged_event_is_documented() -> None:
    missing = {name: where for name, where in logged_events().items() if name not in documented_events()}
    assert not missing, f"add these events to the table of docs/logging.md: {missing}"


def test_event_names_are_snake_case() -> None:
    bad = {name: where for name, where in logged_events().items() if not EVENT_NAME.fullmatch(name)}
    assert not bad, f"events are <subject>_<past participle> in snake_case, details go in fields: {bad}"
