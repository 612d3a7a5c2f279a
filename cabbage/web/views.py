"""What every template can use: time and age filters, the signed-in state and the CSRF field."""

from __future__ import annotations

import datetime
import json
from typing import Any

import flask

from cabbage.durations import format_duration
from cabbage.web import auth


def when(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "–"
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    return "–" if seconds is None else format_duration(seconds)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def register(app: flask.Flask) -> None:
    app.add_template_filter(when)
    app.add_template_filter(age)
    app.add_template_filter(pretty_json)

    @app.context_processor
    def access() -> dict[str, Any]:
        return {
            "read_only": auth.is_read_only(),
            "signed_in": auth.is_signed_in(),
            "csrf_token": auth.csrf_token,
            "csrf_field": auth.CSRF_FIELD,
        }
