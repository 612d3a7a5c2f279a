"""Periodic schedules: their records, their ticks, and which ticks are due, as pure functions.

``@task_manager.periodic(cron=...)`` checks and declares a ``PeriodicSchedule`` (the registry is
the TaskManager's); a supervisor asks ``plan_ticks`` which ticks to defer, with the time read
from the database, and the store records each tick once (``JobStore.record_periodic_ticks``:
a unique constraint on task, periodic id and tick), then defers its job as any defer
(``defer_tick_jobs``). Nothing here reads a clock or does I/O but through a store's callback.

Cron expressions are read by cronsim: 5 fields (minute hour day month weekday), or 6 with the
seconds first. A tick is a whole second, an aware UTC datetime. Time zones and their DST
changes follow Debian's cron for a schedule at a fixed time of day (its minute and hour fields
do not start with ``*``): it runs once when a local time happens twice, and right after the
change when its local time is skipped. Any other schedule runs on the real clock: every real
15 minutes of a repeated hour, none in a skipped one.

>>> schedule = check_schedule("proj.tasks.report", "*/5 * * * *", timezone="Europe/Paris")
>>> plan = plan_ticks(schedule, since=last_tick_at, now=database_now)
>>> plan.due, plan.next_tick_at
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import inspect
import math
import zoneinfo
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from cronsim import CronSim, CronSimError

from cabbage.exceptions import AlreadyEnqueued, PeriodicScheduleError
from cabbage.jobs import NewJob

if TYPE_CHECKING:
    from cabbage.tasks import Task

UTC = datetime.timezone.utc
DEFAULT_CATCH_UP_S = 600.0
# A tick is on time a little after its second: the supervisor wakes for it, then asks the database.
MIN_CATCH_UP_S = 1.0
MAX_CATCH_UP_S = 86400.0
# At most this many ticks per schedule go to the store in one call; the rest right after.
MAX_TICKS_PER_CALL = 500
# Skipped ticks are counted up to this many (a per-second schedule left for a year has millions).
MAX_COUNTED_SKIPS = 10_000
# Tick rows are kept this long, and each schedule's newest one for ever (the store's prune).
TICK_RETENTION_S = 86400.0
TIMESTAMP = "timestamp"
CRON_EXAMPLE = "'*/5 * * * *' (minute hour day month weekday), or 6 fields with the seconds first"


@dataclasses.dataclass(frozen=True)
class PeriodicSchedule:
    """When a task runs: a cron expression in a time zone; ``periodic_id`` tells apart two
    schedules of one task. A tick missed by more than ``catch_up_s`` seconds (no supervisor ran
    then) is skipped, not deferred late."""

    task_name: str
    cron: str
    timezone: str = "UTC"
    periodic_id: str = ""
    catch_up_s: float = DEFAULT_CATCH_UP_S

    @property
    def key(self) -> tuple[str, str]:
        return self.task_name, self.periodic_id

    def ticks_after(self, moment: datetime.datetime) -> Iterator[datetime.datetime]:
        """The schedule's ticks strictly after ``moment`` (aware), in UTC, each once, in order."""
        zone = zone_named(self.timezone)
        local_start = moment.astimezone(zone)
        if zone is not UTC and self.keeps_wall_clock_time:
            local_ticks: Iterator[datetime.datetime] = (
                _instant_of(naive, zone) for naive in CronSim(self.cron, local_start.replace(tzinfo=None))
            )
        else:
            local_ticks = CronSim(self.cron, local_start)
        last = moment
        for local_tick in local_ticks:
            tick = local_tick.astimezone(UTC)
            # Two wall times can map to one instant (both inside a skipped hour), and a start
            # in the second pass of a repeated hour can yield a first pass's earlier instant.
            if tick > last:
                yield tick
                last = tick

    def next_tick_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The first tick after ``moment``; None when the expression never fires again."""
        return next(self.ticks_after(moment), None)

    @property
    def keeps_wall_clock_time(self) -> bool:
        """Whether it runs at a fixed time of day (minute and hour fields do not start with
        ``*``), so that a DST change moves it as Debian's cron does, rather than along the real
        clock."""
        fields = self.cron.split()
        minute, hour = (fields[1], fields[2]) if len(fields) == 6 else (fields[0], fields[1])
        return not minute.startswith("*") and not hour.startswith("*")

    def describe(self) -> str:
        """The expression in words ("Every fifth minute of every hour"), by cronsim."""
        return CronSim(self.cron, datetime.datetime(2000, 1, 1)).explain()


def _instant_of(wall_time: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime:
    """A local wall time as an instant, as Debian's cron reads it: a time that happens twice is
    its first pass; a time skipped by a DST change moves to the first minute after the change."""
    instant = wall_time.replace(tzinfo=zone, fold=0)
    while _is_skipped(instant):
        wall_time += datetime.timedelta(minutes=1)
        instant = wall_time.replace(tzinfo=zone, fold=0)
    return instant


def _is_skipped(instant: datetime.datetime) -> bool:
    return instant != instant.astimezone(UTC).astimezone(instant.tzinfo)


@functools.lru_cache(maxsize=64)
def zone_named(name: str) -> datetime.tzinfo:
    """The time zone named by an IANA name ("Europe/Paris"), or PeriodicScheduleError."""
    if name == "UTC":
        return UTC  # cronsim's fast path: no DST to handle
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise PeriodicScheduleError(
            f"unknown timezone {name!r}: use an IANA name such as 'Europe/Paris', or 'UTC' ({type(exc).__name__})"
        ) from None


# -- declaring ---------------------------------------------------------------------------------


def check_schedule(
    task_name: str, cron: str, *, timezone: str = "UTC", periodic_id: str = "", catch_up: float = DEFAULT_CATCH_UP_S
) -> PeriodicSchedule:
    """A schedule whose every part was checked, or PeriodicScheduleError saying what to pass."""
    where = f"the periodic schedule of {task_name}" if task_name else "@task_manager.periodic"
    if not isinstance(cron, str):
        raise PeriodicScheduleError(f"cron of {where} must be a string, got {cron!r}; e.g. {CRON_EXAMPLE}")
    if not isinstance(timezone, str):
        raise PeriodicScheduleError(f"timezone of {where} must be an IANA name such as 'Europe/Paris', got {timezone!r}")
    if not isinstance(periodic_id, str) or "\x00" in periodic_id:
        raise PeriodicScheduleError(f"periodic_id of {where} must be a string without NUL characters, got {periodic_id!r}")
    is_number = isinstance(catch_up, (int, float)) and not isinstance(catch_up, bool) and math.isfinite(catch_up)
    if not is_number or not MIN_CATCH_UP_S <= catch_up <= MAX_CATCH_UP_S:
        raise PeriodicScheduleError(
            f"catch_up of {where} must be a number of seconds from {MIN_CATCH_UP_S:g} to {MAX_CATCH_UP_S:g} (a day), "
            f"got {catch_up!r}"
        )
    zone = zone_named(timezone)
    try:
        first = next(CronSim(cron, datetime.datetime(2000, 1, 1, tzinfo=zone)))
    except CronSimError as exc:
        raise PeriodicScheduleError(f"cron {cron!r} of {where} is invalid ({exc}); write {CRON_EXAMPLE}") from None
    except StopIteration:
        first = None
    if first is None:
        raise PeriodicScheduleError(f"cron {cron!r} of {where} never fires (no match within 50 years); check its day fields")
    return PeriodicSchedule(task_name, " ".join(cron.split()), timezone, periodic_id, float(catch_up))


def check_task_takes_no_arguments(task: "Task") -> None:
    """A tick calls its task with ``timestamp`` at most: refuses a task that needs more."""
    signature = inspect.signature(task.func)
    try:
        signature.bind(**({TIMESTAMP: 0} if accepts_timestamp(task) else {}))
    except TypeError:
        raise PeriodicScheduleError(
            f"periodic task {task.name} must take no argument but an optional keyword 'timestamp' (the tick's time, "
            f"epoch seconds), got {task.func.__name__}{signature}; give the other parameters defaults"
        ) from None


def accepts_timestamp(task: "Task") -> bool:
    """Whether the task function takes ``timestamp`` as a keyword (by name, or ``**kwargs``)."""
    parameters = inspect.signature(task.func).parameters.values()
    return any(
        (parameter.name == TIMESTAMP and parameter.kind is not parameter.POSITIONAL_ONLY)
        or parameter.kind is parameter.VAR_KEYWORD
        for parameter in parameters
    )


def tick_job(task: "Task", tick_at: datetime.datetime) -> NewJob:
    """The job of one tick, as ``task.configure(schedule_at=tick_at).defer(...)`` would store it
    (the same code builds both): the task's queue, lock, priority, queueing lock and retry
    limit, due at the tick; with ``timestamp=<epoch seconds>`` when the task takes it."""
    kwargs = {TIMESTAMP: int(tick_at.timestamp())} if accepts_timestamp(task) else {}
    return task.configure(schedule_at=tick_at).new_job((), kwargs)


# -- what a store records and returns ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PeriodicTick:
    """A tick to record once: deferred as ``job``, or, with ``job`` None, the marker that
    ``skipped_ticks`` ticks up to ``tick_at`` were skipped (missed by more than the catch-up)."""

    task_name: str
    periodic_id: str
    tick_at: datetime.datetime
    job: NewJob | None
    skipped_ticks: int | None = None

    @property
    def tick_key(self) -> tuple[str, str, datetime.datetime]:
        return self.task_name, self.periodic_id, self.tick_at


@dataclasses.dataclass(frozen=True)
class RecordedTick:
    """A tick the store recorded: its job (``job_id``), or ``skipped_ticks`` up to ``tick_at``
    skipped; ``recorded_at`` on the store's clock. The job may have been pruned since."""

    task_name: str
    periodic_id: str
    tick_at: datetime.datetime
    job_id: int | None
    skipped_ticks: int | None
    recorded_at: datetime.datetime

    @property
    def tick_key(self) -> tuple[str, str, datetime.datetime]:
        return self.task_name, self.periodic_id, self.tick_at


@dataclasses.dataclass(frozen=True)
class RefusedTick(RecordedTick):
    """A tick whose job its queueing lock refused, recorded as one tick skipped, as the call
    that recorded it answers it: the ``queueing_lock``, and ``waiting_job_id``, the todo job
    holding it (None when not known: it raced another defer). The store keeps the skip only."""

    queueing_lock: str
    waiting_job_id: int | None

    def as_recorded(self) -> RecordedTick:
        """The tick as the store keeps it."""
        return RecordedTick(self.task_name, self.periodic_id, self.tick_at, None, 1, self.recorded_at)


def defer_tick_jobs(
    recorded: Sequence[RecordedTick],
    ticks: Sequence[PeriodicTick],
    defer_jobs: Callable[[Sequence[NewJob]], list[int]],
) -> list[RecordedTick]:
    """``recorded`` (in the transaction that recorded them) with the jobs of their ticks stored
    by ``defer_jobs`` (the store's own, in that transaction): a tick's job is inserted by the
    same rules, and the same code, as any defer. A job its queueing lock refuses (a todo job
    holds the key) is not inserted and leaves its tick skipped (a ``RefusedTick``), the other
    ticks deferred all the same: ``AlreadyEnqueued`` never fails a batch. The skipped markers
    stay as recorded.

    Jobs go by lock, then tick key: two callers racing never take two lock lines' advisory
    locks in opposite orders, and each lock's line gets its ticks in order. The jobs without a
    queueing lock go in one call; each with one alone, as only one of a key may wait.
    """
    jobs = {tick.tick_key: tick.job for tick in ticks if tick.job is not None}
    to_defer = sorted(
        (tick for tick in recorded if tick.tick_key in jobs),
        key=lambda tick: (jobs[tick.tick_key].lock is not None, jobs[tick.tick_key].lock or "", tick.tick_key),
    )
    job_ids: dict[tuple[str, str, datetime.datetime], int] = {}
    refusals: dict[tuple[str, str, datetime.datetime], tuple[str, int | None]] = {}
    waiting: dict[str, int | None] = {}  # queueing lock -> the todo job holding it, from this call
    batch: list[tuple[str, str, datetime.datetime]] = []

    def defer_batch() -> None:
        job_ids.update(zip(batch, defer_jobs([jobs[key] for key in batch])))
        batch.clear()

    for tick in to_defer:
        job = jobs[tick.tick_key]
        if job.queueing_lock is None:
            batch.append(tick.tick_key)
            continue
        if batch:
            defer_batch()  # first, to keep each lock's line in tick order
        if job.queueing_lock in waiting:
            refusals[tick.tick_key] = (job.queueing_lock, waiting[job.queueing_lock])
            continue
        try:
            (job_ids[tick.tick_key],) = defer_jobs([job])
            waiting[job.queueing_lock] = job_ids[tick.tick_key]
        except AlreadyEnqueued as refused:
            waiting[job.queueing_lock] = refused.job_id
            refusals[tick.tick_key] = (job.queueing_lock, refused.job_id)
    if batch:
        defer_batch()
    return [_with_outcome(tick, job_ids.get(tick.tick_key), refusals.get(tick.tick_key)) for tick in recorded]


def _with_outcome(tick: RecordedTick, job_id: int | None, refusal: tuple[str, int | None] | None) -> RecordedTick:
    if refusal is not None:
        queueing_lock, waiting_job_id = refusal
        return RefusedTick(*tick.tick_key, None, 1, tick.recorded_at, queueing_lock, waiting_job_id)
    return tick if job_id is None else dataclasses.replace(tick, job_id=job_id)


@dataclasses.dataclass(frozen=True)
class DeclaredSchedule:
    """A schedule as the operators' views show it: as declared (the store's table, or the
    app's own with ``--app``), its last recorded tick and its next tick after ``now``."""

    task_name: str
    periodic_id: str
    cron: str
    timezone: str
    catch_up_s: float
    first_declared_at: datetime.datetime | None  # None: no supervisor declared it yet
    last_declared_at: datetime.datetime | None
    last_tick: RecordedTick | None
    next_tick_at: datetime.datetime | None

    @property
    def schedule(self) -> PeriodicSchedule:
        return PeriodicSchedule(self.task_name, self.cron, self.timezone, self.periodic_id, self.catch_up_s)

    @classmethod
    def of(
        cls,
        schedule: PeriodicSchedule,
        first_declared_at: datetime.datetime | None,
        last_declared_at: datetime.datetime | None,
        last_tick: RecordedTick | None,
        now: datetime.datetime,
    ) -> "DeclaredSchedule":
        """``schedule`` with its declarations and last tick, and its next tick after ``now``."""
        return cls(
            **dataclasses.asdict(schedule),
            first_declared_at=first_declared_at,
            last_declared_at=last_declared_at,
            last_tick=last_tick,
            next_tick_at=next_tick_or_none(schedule, now),
        )


@dataclasses.dataclass(frozen=True)
class PeriodicOverview:
    """The declared schedules, by task name and periodic id, and the store's clock when read."""

    now: datetime.datetime
    schedules: list[DeclaredSchedule]

    def by_key(self) -> dict[tuple[str, str], DeclaredSchedule]:
        return {(declared.task_name, declared.periodic_id): declared for declared in self.schedules}


def next_tick_or_none(schedule: PeriodicSchedule, now: datetime.datetime) -> datetime.datetime | None:
    """The next tick after ``now``, None for an expression this cabbage cannot read (declared
    by another release)."""
    try:
        return schedule.next_tick_after(now)
    except (CronSimError, PeriodicScheduleError):
        return None


def since_of(known: DeclaredSchedule | None, now: datetime.datetime) -> datetime.datetime:
    """Where a schedule's ticks start counting: after its last recorded tick, and never before a
    supervisor first declared it (a schedule not yet in the store starts now)."""
    if known is None or known.first_declared_at is None:
        return now
    if known.last_tick is None:
        return known.first_declared_at
    return max(known.first_declared_at, known.last_tick.tick_at)


def tick_overdue_s(declared: DeclaredSchedule, now: datetime.datetime) -> float:
    """How long the schedule's next tick to record (the first after ``since_of``) has been due
    at ``now`` without being recorded, in seconds: 0 when it is not due yet, when no
    supervisor declared the schedule, or for an expression this cabbage cannot read. A
    supervisor records a tick within a second: more means none runs the schedule."""
    due_at = next_tick_or_none(declared.schedule, since_of(declared, now))
    return max((now - due_at).total_seconds(), 0.0) if due_at is not None else 0.0


def declared_as_in_app(
    schedule: PeriodicSchedule, stored: DeclaredSchedule | None, now: datetime.datetime
) -> DeclaredSchedule:
    """An app's schedule, with what the store knows of it (declarations, last tick), as views
    show it."""
    if stored is None:
        return DeclaredSchedule.of(schedule, None, None, None, now)
    return DeclaredSchedule.of(schedule, stored.first_declared_at, stored.last_declared_at, stored.last_tick, now)


# -- which ticks are due -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SkippedTicks:
    """Ticks missed by more than the schedule's catch-up: ``count`` of them (``counted_all``
    False: at least that many) from ``first_at`` to ``last_at``."""

    first_at: datetime.datetime
    last_at: datetime.datetime
    count: int
    counted_all: bool


@dataclasses.dataclass(frozen=True)
class TickPlan:
    """What to do for one schedule now: defer ``due`` (oldest first), record ``skipped``, and
    look again at ``next_tick_at`` (None: never; at or before now: more are due at once)."""

    due: tuple[datetime.datetime, ...]
    skipped: SkippedTicks | None
    next_tick_at: datetime.datetime | None


def plan_ticks(schedule: PeriodicSchedule, since: datetime.datetime, now: datetime.datetime) -> TickPlan:
    """The ticks after ``since`` (the schedule's last recorded tick, or when it was first
    declared) up to ``now``: those within ``catch_up_s`` of now are due, older ones skipped.

    Both times come from the store's clock (the database clock for PostgreSQL).
    """
    cutoff = now - datetime.timedelta(seconds=schedule.catch_up_s)
    skipped = _skipped_ticks(schedule, since, cutoff) if since < cutoff else None
    due: list[datetime.datetime] = []
    next_tick_at = None
    for tick in schedule.ticks_after(max(since, cutoff)):
        if tick > now or len(due) == MAX_TICKS_PER_CALL:
            next_tick_at = tick
            break
        due.append(tick)
    return TickPlan(tuple(due), skipped, next_tick_at)


def _skipped_ticks(schedule: PeriodicSchedule, since: datetime.datetime, cutoff: datetime.datetime) -> SkippedTicks | None:
    ticks = schedule.ticks_after(since)
    first = next(ticks, None)
    if first is None or first > cutoff:
        return None
    last, count = first, 1
    for tick in ticks:
        if tick > cutoff:
            return SkippedTicks(first, last, count, counted_all=True)
        last, count = tick, count + 1
        if count == MAX_COUNTED_SKIPS:
            break
    else:
        return SkippedTicks(first, last, count, counted_all=True)
    return SkippedTicks(first, _last_tick_until(schedule, last, cutoff), count, counted_all=False)


def _last_tick_until(schedule: PeriodicSchedule, after: datetime.datetime, until: datetime.datetime) -> datetime.datetime:
    """The last tick at or before ``until`` (``after`` is one), looked for in growing spans
    before it."""
    span_s = 60.0
    while True:
        start = max(after, until - datetime.timedelta(seconds=span_s))
        found = None
        for tick in schedule.ticks_after(start):
            if tick > until:
                break
            found = tick
        if found is not None:
            return found
        if start == after:
            return after
        span_s *= 60


__all__ = [
    "PeriodicSchedule",
    "PeriodicTick",
    "RecordedTick",
    "RefusedTick",
    "DeclaredSchedule",
    "PeriodicOverview",
    "SkippedTicks",
    "TickPlan",
    "check_schedule",
    "plan_ticks",
    "since_of",
    "tick_overdue_s",
    "tick_job",
    "defer_tick_jobs",
    "DEFAULT_CATCH_UP_S",
    "TICK_RETENTION_S",
]
