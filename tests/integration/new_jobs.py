"""A NewJob with the defaults the store tests share."""

from __future__ import annotations

from typing import Any

from cabbage.jobs import NewJob


def new_job(**fields: Any) -> NewJob:
    fields.setdefault("queue", "queue")
    fields.setdefault("task_name", "write_alphabet")
    return NewJob(**fields)
