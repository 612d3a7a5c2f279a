"""RetryPolicy and make_retry_policy: when a failed attempt is tried again, and bad settings."""

from __future__ import annotations

import dataclasses
import re

import pytest

from cabbage.exceptions import CabbageError, ConfigurationError
from cabbage.retry import RetryPolicy, make_retry_policy


def test_the_default_policy_never_retries() -> None:
    assert RetryPolicy().retry_in_s(1, RuntimeError("boom")) is None


def test_max_attempts_counts_the_first_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, wait_s=2)
    assert [policy.retry_in_s(attempt, RuntimeError()) for attempt in (1, 2, 3, 4)] == [2, 2, None, None]


def test_exponential_backoff_doubles_the_wait_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=None, wait_s=2, backoff="exponential", max_wait_s=20)
    assert [policy.retry_in_s(attempt, None) for attempt in range(1, 7)] == [2, 4, 8, 16, 20, 20]


def test_a_fixed_wait_is_capped_too() -> None:
    assert RetryPolicy(max_attempts=2, wait_s=10, max_wait_s=5).retry_in_s(1, None) == 5


def test_no_limit_keeps_retrying() -> None:
    policy = RetryPolicy(max_attempts=None, wait_s=1)
    assert policy.retry_in_s(10_000, RuntimeError()) == 1


def test_exponential_backoff_without_limit_survives_many_attempts() -> None:
    policy = RetryPolicy(max_attempts=None, wait_s=1.5, backoff="exponential", max_wait_s=60)
    assert policy.retry_in_s(2_000, RuntimeError()) == 60


def test_only_exceptions_of_retry_on_are_retried() -> None:
    policy = RetryPolicy(max_attempts=5, wait_s=1, retry_on=(ConnectionError, LookupError))
    assert policy.retry_in_s(1, ConnectionRefusedError()) == 1  # a subclass counts
    assert policy.retry_in_s(1, KeyError("k")) == 1
    assert policy.retry_in_s(1, ValueError("no")) is None


def test_a_lost_worker_has_no_exception_and_is_retried_while_attempts_remain() -> None:
    policy = RetryPolicy(max_attempts=2, retry_on=(ConnectionError,))
    assert policy.retry_in_s(1, None) == 0
    assert policy.retry_in_s(2, None) is None


def test_a_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().max_attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize("max_attempts", [0, -1, 1.5, "3", True, False])
def test_max_attempts_must_be_a_whole_number_of_at_least_one(max_attempts: object) -> None:
    with pytest.raises(ConfigurationError, match=f"max_attempts must be .*got {re.escape(repr(max_attempts))}"):
        RetryPolicy(max_attempts=max_attempts)  # type: ignore[arg-type]


def test_backoff_must_be_fixed_or_exponential() -> None:
    with pytest.raises(ConfigurationError, match="backoff must be 'fixed' or 'exponential', got 'linear'"):
        RetryPolicy(backoff="linear")


@pytest.mark.parametrize("waits", [{"wait_s": -1}, {"max_wait_s": -0.5}])
def test_waits_must_not_be_negative(waits: dict) -> None:
    with pytest.raises(ConfigurationError, match="must be a finite number of seconds >= 0"):
        RetryPolicy(**waits)


@pytest.mark.parametrize("name", ["wait_s", "max_wait_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, "1", True])
def test_waits_must_be_finite_numbers(name: str, value: object) -> None:
    expected = f"{name} must be a finite number of seconds >= 0, got {re.escape(repr(value))}"
    with pytest.raises(ConfigurationError, match=expected):
        RetryPolicy(**{name: value})  # type: ignore[arg-type]


def test_a_huge_exponential_wait_stays_a_capped_number() -> None:
    policy = RetryPolicy(max_attempts=None, wait_s=1e300, backoff="exponential", max_wait_s=7200)
    assert policy.retry_in_s(5_000, None) == 7200


def test_bad_settings_are_value_errors_and_cabbage_errors() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(CabbageError):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    "retry, max_attempts",
    [(None, 1), (False, 1), (0, 1), (1, 2), (5, 6), (True, None)],
)
def test_make_retry_policy_reads_the_task_retry_argument(retry: object, max_attempts: int | None) -> None:
    assert make_retry_policy(retry).max_attempts == max_attempts  # type: ignore[arg-type]


def test_make_retry_policy_keeps_a_policy_as_given() -> None:
    policy = RetryPolicy(max_attempts=4, wait_s=3, backoff="exponential")
    assert make_retry_policy(policy) is policy


@pytest.mark.parametrize("retry", [-1, 1.5, "3", [3]])
def test_make_retry_policy_refuses_anything_else(retry: object) -> None:
    with pytest.raises(ConfigurationError, match=f"retry must be a number of retries .*got {re.escape(repr(retry))}"):
        make_retry_policy(retry)  # type: ignore[arg-type]
