"""Reading the job listing's query string (filters, cursor, limit), shared by pages and API."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from cabbage.admin import DEFAULT_PAGE_SIZE, MAX_JOB_ID, MAX_PAGE_SIZE, JobFilter
from cabbage.exceptions import ConfigurationError


@dataclasses.dataclass(frozen=True)
class Listing:
    job_filter: JobFilter
    limit: int
    cursor: int | None

    def query(self, **changes: object) -> dict[str, object]:
        """The query string of this listing with some values changed (for paging links)."""
        values: dict[str, object] = {
            "status": self.job_filter.status.value if self.job_filter.status else None,
            "queue": self.job_filter.queue,
            "task": self.job_filter.task_name,
            "lock": self.job_filter.lock,
            "limit": self.limit if self.limit != DEFAULT_PAGE_SIZE else None,
            "cursor": self.cursor,
        }
        values.update(changes)
        return {name: value for name, value in values.items() if value is not None}


def whole_number(args: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    text = args.get(name)
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ConfigurationError(f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def read_listing(args: Mapping[str, str]) -> Listing:
    """The listing a query string asks for; ConfigurationError (400) names a bad value."""
    job_filter = JobFilter.parse(args.get("status"), args.get("queue"), args.get("task"), args.get("lock"))
    limit = whole_number(args, "limit", 1, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
    return Listing(job_filter, limit, whole_number(args, "cursor", 1, MAX_JOB_ID))
