"""The supervisor's pure decision logic: RestartPolicy validation and RestartTracker.

The tracker is driven with explicit times (no clock) and seeded ``random.Random`` instances,
so every expectation here is exact and reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from loomk import AgentError, LoomkError, RestartPolicy
from loomk.agents.supervisor import RestartTracker

# ---- RestartPolicy ------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RestartPolicy()
    assert (
        policy.restart,
        policy.max_restarts,
        policy.window_s,
        policy.backoff_s,
        policy.backoff_max_s,
        policy.jitter,
        policy.critical,
    ) == ("permanent", 5, 10.0, 0.1, 5.0, 0.2, False)


@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
def test_policy_accepts_each_restart_kind(restart: str) -> None:
    assert RestartPolicy(restart=restart).restart == restart  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"max_restarts": 0},
        {"window_s": 0},
        {"window_s": 0.0},
        {"backoff_s": 0},
        {"backoff_max_s": 0.0},
        {"jitter": 0},
        {"jitter": 1},
        {"jitter": 1.0},
        {"window_s": 3600, "backoff_s": 2, "backoff_max_s": 60},  # ints are fine numbers
        {"critical": True},
    ],
)
def test_policy_accepts_boundary_values(options: dict[str, object]) -> None:
    policy = RestartPolicy(**options)  # type: ignore[arg-type]
    for name, value in options.items():
        assert getattr(policy, name) == value


@pytest.mark.parametrize(
    "options",
    [
        {"restart": "always"},
        {"restart": "Permanent"},
        {"restart": ""},
        {"restart": None},
        {"max_restarts": -1},
        {"max_restarts": 1.5},
        {"max_restarts": 2.0},
        {"max_restarts": True},
        {"max_restarts": "3"},
        {"max_restarts": None},
        {"window_s": -0.001},
        {"window_s": -10},
        {"window_s": "10"},
        {"window_s": True},
        {"window_s": None},
        {"backoff_s": -0.1},
        {"backoff_s": "0.1"},
        {"backoff_s": False},
        {"backoff_max_s": -1},
        {"backoff_max_s": [5]},
        {"jitter": -0.01},
        {"jitter": 1.01},
        {"jitter": 2},
        {"jitter": -1},
        {"jitter": "0.2"},
        {"jitter": None},
        {"jitter": math.nan},
        {"jitter": math.inf},
    ],
    ids=repr,
)
def test_policy_rejects_bad_values_with_agent_error(options: dict[str, object]) -> None:
    with pytest.raises(AgentError) as info:
        RestartPolicy(**options)  # type: ignore[arg-type]
    (name,) = options
    assert name in str(info.value)  # the message names the bad option
    assert isinstance(info.value, LoomkError)
    assert info.value.code == "AGENT_ERROR"


@pytest.mark.parametrize("name", ["window_s", "backoff_s", "backoff_max_s"])
def test_policy_rejects_nan_durations(name: str) -> None:
    # NaN passes a plain ``value < 0`` check. A NaN window never expires anything (every
    # ``now - t > nan`` is False) and a NaN backoff silently becomes 0 or backoff_max_s;
    # the kernel's Config rejects non-finite numbers for the same reason.
    with pytest.raises(AgentError, match=name):
        RestartPolicy(**{name: math.nan})  # type: ignore[arg-type]


def test_policy_rejects_a_bool_jitter_like_the_other_numbers() -> None:
    # window_s, backoff_s, backoff_max_s and max_restarts all reject bools; jitter must too.
    with pytest.raises(AgentError, match="jitter"):
        RestartPolicy(jitter=True)


def test_policy_is_immutable() -> None:
    policy = RestartPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_restarts = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("restart", "after_failure", "after_normal_exit"),
    [
        ("permanent", True, True),
        ("transient", True, False),
        ("temporary", False, False),
    ],
)
def test_restarts_after(restart: str, after_failure: bool, after_normal_exit: bool) -> None:
    policy = RestartPolicy(restart=restart)  # type: ignore[arg-type]
    assert policy.restarts_after(failed=True) is after_failure
    assert policy.restarts_after(failed=False) is after_normal_exit


# ---- RestartTracker: the sliding window ---------------------------------------------------


def tracker(rng_seed: int = 0, **options: object) -> RestartTracker:
    return RestartTracker(RestartPolicy(**options), rng=random.Random(rng_seed))  # type: ignore[arg-type]


def test_allow_counts_up_to_max_restarts_then_refuses() -> None:
    t = tracker(max_restarts=3, window_s=10)
    assert t.recent == 0
    assert [t.allow(now) for now in (0.0, 1.0, 2.0)] == [True, True, True]
    assert t.recent == 3
    assert t.allow(3.0) is False
    assert t.recent == 3  # a refused restart is not recorded
    assert t.allow(9.5) is False


def test_max_restarts_zero_never_allows() -> None:
    t = tracker(max_restarts=0)
    assert t.allow(0.0) is False
    assert t.allow(1e9) is False
    assert t.recent == 0


def test_window_slides_restarts_out_one_by_one() -> None:
    t = tracker(max_restarts=2, window_s=10)
    assert t.allow(0.0)
    assert t.allow(9.0)
    assert not t.allow(9.5)
    # at 11 the restart of 0 left the window but the one of 9 is still in it
    assert t.allow(11.0)
    assert t.recent == 2
    assert not t.allow(12.0)  # 9 and 11 are within 10 s of 12
    assert t.allow(19.5)  # 9 left the window
    assert t.recent == 2


def test_refused_attempts_do_not_extend_the_window() -> None:
    t = tracker(max_restarts=1, window_s=5)
    assert t.allow(0.0)
    for now in (1.0, 2.0, 3.0, 4.0, 4.9):
        assert not t.allow(now)
    assert t.allow(5.5)  # only the accepted restart at 0 counted


def test_restarts_spread_wider_than_the_window_are_always_allowed() -> None:
    t = tracker(max_restarts=1, window_s=1)
    assert all(t.allow(2.0 * i) for i in range(1000))
    assert t.recent == 1


def test_zero_window_only_counts_simultaneous_restarts() -> None:
    t = tracker(max_restarts=1, window_s=0)
    assert t.allow(5.0)
    assert not t.allow(5.0)
    assert t.allow(5.001)


def test_recent_drops_expired_restarts_on_the_next_allow() -> None:
    t = tracker(max_restarts=5, window_s=10)
    for now in (0.0, 1.0, 2.0):
        t.allow(now)
    assert t.allow(100.0)
    assert t.recent == 1


# ---- RestartTracker: backoff --------------------------------------------------------------


def test_backoff_doubles_per_restart_in_the_window_and_is_capped() -> None:
    t = tracker(max_restarts=10, window_s=100, backoff_s=0.1, backoff_max_s=1.0, jitter=0)
    waits = []
    for now in range(7):
        assert t.allow(float(now))
        waits.append(t.backoff())
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_restarts_from_backoff_s_once_the_window_has_emptied() -> None:
    t = tracker(max_restarts=10, window_s=5, backoff_s=0.5, backoff_max_s=60, jitter=0)
    t.allow(0.0)
    t.allow(1.0)
    t.allow(2.0)
    assert t.backoff() == pytest.approx(2.0)
    t.allow(100.0)
    assert t.backoff() == pytest.approx(0.5)


def test_backoff_counts_only_restarts_still_in_the_window() -> None:
    t = tracker(max_restarts=10, window_s=5, backoff_s=1, backoff_max_s=60, jitter=0)
    for now in (0.0, 1.0, 2.0):
        t.allow(now)
    t.allow(6.5)  # 0 and 1 left the window: 2 and 6.5 remain
    assert t.recent == 2
    assert t.backoff() == pytest.approx(2.0)


def test_backoff_cap_below_base_wins() -> None:
    t = tracker(backoff_s=3, backoff_max_s=1, jitter=0)
    t.allow(0.0)
    assert t.backoff() == pytest.approx(1.0)


def test_zero_backoff_is_zero() -> None:
    t = tracker(backoff_s=0, jitter=1)
    for now in range(5):
        t.allow(float(now))
        assert t.backoff() == 0.0


def test_backoff_stays_capped_after_very_many_restarts_in_the_window() -> None:
    # backoff_s * 2 ** 1024 does not fit a float: the 1025th restart in one window must still
    # give backoff_max_s, not raise OverflowError (which would escape the agent's supervisor
    # task and bring the whole kernel down).
    t = tracker(max_restarts=5000, window_s=math.inf, backoff_s=0.001, backoff_max_s=1, jitter=0)
    for now in range(1100):
        assert t.allow(float(now))
        assert t.backoff() == pytest.approx(min(1.0, 0.001 * 2.0 ** min(now, 20)))


def test_backoff_is_a_float() -> None:
    t = tracker(backoff_s=1, backoff_max_s=10, jitter=0)
    t.allow(0.0)
    assert type(t.backoff()) is float


# ---- RestartTracker: jitter ---------------------------------------------------------------


def factors(seed: int, jitter: float, draws: int = 300) -> list[float]:
    """Backoff / base for ``draws`` restarts with a constant base of 1 s."""
    t = tracker(
        seed, max_restarts=draws, window_s=math.inf, backoff_s=1, backoff_max_s=1, jitter=jitter
    )
    out = []
    for now in range(draws):
        assert t.allow(float(now))
        out.append(t.backoff())
    return out


@pytest.mark.parametrize("jitter", [0.05, 0.2, 0.5, 1.0])
def test_jitter_factor_stays_within_bounds_and_spreads(jitter: float) -> None:
    values = factors(1, jitter)
    assert all(1 - jitter <= v <= 1 + jitter for v in values)
    assert all(v >= 0.0 for v in values)
    # it really is jitter: values cover most of the band on both sides of the base
    assert min(values) < 1 - 0.8 * jitter
    assert max(values) > 1 + 0.8 * jitter


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    assert factors(42, 0.3) == factors(42, 0.3)
    assert factors(42, 0.3) != factors(43, 0.3)


def test_jitter_applies_on_top_of_the_exponential_base() -> None:
    t = RestartTracker(
        RestartPolicy(max_restarts=10, window_s=100, backoff_s=1, backoff_max_s=100, jitter=0.25),
        rng=random.Random(5),
    )
    for n in range(1, 8):
        assert t.allow(float(n))
        base = 2.0 ** (n - 1)
        assert 0.75 * base <= t.backoff() <= 1.25 * base


def test_jitter_applies_to_the_capped_value() -> None:
    t = RestartTracker(
        RestartPolicy(
            max_restarts=200, window_s=math.inf, backoff_s=1, backoff_max_s=2, jitter=0.5
        ),
        rng=random.Random(9),
    )
    capped = []
    for n in range(200):
        assert t.allow(float(n))
        wait = t.backoff()
        if n >= 1:
            capped.append(wait)
    assert all(1.0 <= w <= 3.0 for w in capped)
    assert max(capped) > 2.0  # jitter is applied after the cap, so it may exceed it
