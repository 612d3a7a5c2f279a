"""The changes an operator makes to jobs by hand (retry, cancel, abort): which statuses allow each,
and the all-or-nothing refusal that both stores give, with the same message.

``cabbage.admin.Admin`` (PostgreSQL) and ``cabbage.testing.InMemoryJobStore`` lock or read the
named jobs, then call ``refuse_ineligible``: when any id is unknown or in a status that does not
allow the change, it raises naming each such id, and no job is changed. A retry also calls
``refuse_taken_queueing_locks``: a retried job would be a second ``todo`` job of its queueing lock.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

from cabbage.exceptions import ConfigurationError, JobNotFound, JobStateError
from cabbage.jobs import Status

RETRYABLE_STATUSES = frozenset({Status.FAILED, Status.CANCELLED})
CANCELLABLE_STATUSES = frozenset({Status.TODO})
ABORTABLE_STATUSES = frozenset({Status.TODO, Status.DOING})
ALLOWED_STATUSES = {"retry": RETRYABLE_STATUSES, "cancel": CANCELLABLE_STATUSES, "abort": ABORTABLE_STATUSES}
PAST_PARTICIPLES = {"retry": "retried", "cancel": "cancelled", "abort": "aborted"}
MAX_ABORTED_BY_CHARS = 200
MAX_JOB_ID = 2**63 - 1  # bigint


@dataclasses.dataclass(frozen=True)
class AbortResult:
    """What an abort did: jobs cancelled at once (waiting, or only reserved by a worker) and
    running jobs whose worker was asked to stop them, each in id order."""

    cancelled: list[int]
    requested: list[int]


def check_job_id(job_id: int) -> int:
    """The id, or JobNotFound when no job can have it (ids are bigints from 1)."""
    if not 1 <= job_id <= MAX_JOB_ID:
        raise JobNotFound(f"no job with id {job_id}: job ids are whole numbers from 1")
    return job_id


def wanted_job_ids(verb: str, job_ids: Iterable[int]) -> list[int]:
    """The distinct ids of a change, in id order (the order rows are locked in)."""
    wanted = sorted({check_job_id(job_id) for job_id in job_ids})
    if not wanted:
        raise ConfigurationError(f"no job id given to {verb}")
    return wanted


def refuse_ineligible(verb: str, wanted: Sequence[int], found: Mapping[int, Status]) -> None:
    """Raises, naming every id that cannot take the change (unknown, or in the wrong status), so
    that none is changed. ``found``: the status of each wanted job that exists."""
    allowed = ALLOWED_STATUSES[verb]
    missing = [job_id for job_id in wanted if job_id not in found]
    wrong = [f"job {job_id} is {found[job_id].value}" for job_id in wanted if job_id in found and found[job_id] not in allowed]
    if not missing and not wrong:
        return
    allowed_text = " or ".join(sorted(status.value for status in allowed))
    why = f"only {allowed_text} jobs can be {PAST_PARTICIPLES[verb]}"
    if verb == "cancel" and any(status is Status.DOING for status in found.values()):
        why += "; a doing job belongs to its worker until its attempt ends: abort it instead"
    parts = [f"no job with id {', '.join(map(str, missing))}"] if missing else []
    if wrong:
        parts.append(f"{', '.join(wrong)} ({why})")
    message = f"cannot {verb}: {'; '.join(parts)}; no job was changed"
    raise JobNotFound(message) if missing and not wrong else JobStateError(message)


def check_aborted_by(aborted_by: str) -> str:
    """Who asks for an abort, as stored and shown: a short line of printable text."""
    if not isinstance(aborted_by, str) or not aborted_by.strip():
        raise ConfigurationError("an abort must say who asks for it (--by): got an empty name")
    if len(aborted_by) > MAX_ABORTED_BY_CHARS:
        raise ConfigurationError(f"the name of who aborts is {len(aborted_by)} characters long; at most {MAX_ABORTED_BY_CHARS}")
    if not aborted_by.isprintable():  # NUL, newlines, lone surrogates
        raise ConfigurationError(f"the name of who aborts holds control or unprintable characters: {aborted_by!r}")
    return aborted_by.strip()


def refuse_taken_queueing_locks(wanted_locks: Mapping[int, str], waiting: Mapping[str, int]) -> None:
    """Raises JobStateError, naming each job, when retrying them would make a second todo job of
    a queueing lock: one held by a waiting job, or shared by two of them. ``wanted_locks``: the
    queueing lock of each job to retry that has one; ``waiting``: the todo job holding a key."""
    problems = []
    first_with: dict[str, int] = {}
    for job_id in sorted(wanted_locks):
        queueing_lock = wanted_locks[job_id]
        if queueing_lock in waiting:
            problems.append(f"job {job_id}'s queueing lock {queueing_lock!r} is held by waiting job {waiting[queueing_lock]}")
        elif queueing_lock in first_with:
            problems.append(f"jobs {first_with[queueing_lock]} and {job_id} share the queueing lock {queueing_lock!r}")
        else:
            first_with[queueing_lock] = job_id
    if problems:
        raise JobStateError(
            f"cannot retry: {'; '.join(problems)} (one todo job per queueing lock); no job was changed"
        )


__all__ = ["RETRYABLE_STATUSES", "CANCELLABLE_STATUSES", "ABORTABLE_STATUSES", "AbortResult", "check_aborted_by", "check_job_id", "wanted_job_ids", "refuse_ineligible",
           "refuse_taken_queueing_locks", "MAX_JOB_ID"]
