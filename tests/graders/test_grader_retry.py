"""The one retry helper of endpoint graders and remote judges (rft.graders.retry), on a fake clock: nothing sleeps."""

import pytest

from rft.graders.retry import GaveUp, Retryable, RetryPolicy, call_with_retries


def failing(times, *, retry_after=None, then=1.0):
    calls = []

    def attempt():
        calls.append(len(calls))
        if len(calls) <= times:
            raise Retryable(f"failure {len(calls)}", retry_after)
        return then

    return attempt, calls


def test_bounded_attempts_with_every_error_kept(fake_time):
    attempt, calls = failing(10)
    with pytest.raises(GaveUp) as e:
        call_with_retries(attempt, RetryPolicy(attempts=4), fake_time.timing())
    assert len(calls) == 4 and e.value.reason == "attempts"
    assert e.value.errors == ["failure 1", "failure 2", "failure 3", "failure 4"]
    assert fake_time.sleeps == [0.5, 1.0, 2.0]  # no wait after the last attempt


def test_success_after_retries_returns_the_value(fake_time):
    attempt, calls = failing(2, then=0.75)
    assert call_with_retries(attempt, RetryPolicy(attempts=4), fake_time.timing()) == 0.75
    assert len(calls) == 3 and fake_time.sleeps == [0.5, 1.0]


def test_full_jitter_draws_inside_a_capped_window(fake_time):
    fake_time.draw = 0.5
    attempt, _ = failing(10)
    with pytest.raises(GaveUp):
        call_with_retries(attempt, RetryPolicy(attempts=6, initial_backoff_s=1.0, multiplier=3.0, max_backoff_s=10.0),
                          fake_time.timing())
    assert fake_time.sleeps == [0.5, 1.5, 4.5, 5.0, 5.0]  # half of 1, 3, 9, then the 10 s cap


def test_retry_after_is_honoured_up_to_the_cap(fake_time):
    attempt, _ = failing(10, retry_after=45.0)
    with pytest.raises(GaveUp):
        call_with_retries(attempt, RetryPolicy(attempts=3, retry_after_cap_s=30.0), fake_time.timing())
    assert fake_time.sleeps == [30.0, 30.0]
    fake_time.sleeps.clear()
    attempt, _ = failing(1, retry_after=2.0)
    call_with_retries(attempt, RetryPolicy(attempts=3, retry_after_cap_s=30.0), fake_time.timing())
    assert fake_time.sleeps == [2.0]


def test_deadline_stops_before_a_wait_that_would_cross_it(fake_time):
    attempt, calls = failing(10)
    with pytest.raises(GaveUp) as e:
        call_with_retries(attempt, RetryPolicy(attempts=10, deadline_s=2.0), fake_time.timing())
    # waits 0.5 and 1.0 end at 1.5 s; the next (2.0) would end at 3.5 s, past the 2 s deadline
    assert e.value.reason == "deadline" and len(calls) == 3 and fake_time.sleeps == [0.5, 1.0]


def test_other_exceptions_are_not_retried(fake_time):
    calls = []

    def attempt():
        calls.append(1)
        raise ValueError("permanent")

    with pytest.raises(ValueError, match="permanent"):
        call_with_retries(attempt, RetryPolicy(attempts=5), fake_time.timing())
    assert calls == [1] and fake_time.sleeps == []
