"""The expiry index, the mass-expiry guard and the request limiter, in memory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from registry_app import liveness
from registry_app.liveness import ExpiryIndex, MassExpiryGuard, RequestLimiter


class Clock:
    """Stands in for time.monotonic, in registry_app.liveness only."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    # Replace the module's `time`, not time.monotonic itself: asyncio reads that one.
    monkeypatch.setattr(liveness, "time", SimpleNamespace(monotonic=fake))
    return fake


# --- ExpiryIndex ---------------------------------------------------------------------


def test_an_empty_index_tracks_nothing_and_nothing_is_due():
    index = ExpiryIndex()

    assert len(index) == 0
    assert index.tracked(0) == 0
    assert index.due(0, 1e12) == []


def test_tracked_nodes_are_counted_per_partition_and_in_total():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)
    index.track(0, "node-b", 200.0)
    index.track(1, "node-c", 300.0)

    assert index.tracked(0) == 2
    assert index.tracked(1) == 1
    assert index.tracked(2) == 0
    assert len(index) == 3


def test_due_lists_the_partitions_nodes_whose_deadline_is_before_the_time():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)
    index.track(0, "node-b", 200.0)
    index.track(1, "node-c", 50.0)

    assert index.due(0, 150.0) == ["node-a"]
    assert sorted(index.due(0, 250.0)) == ["node-a", "node-b"]
    assert index.due(1, 150.0) == ["node-c"]
    assert index.due(2, 150.0) == []


def test_a_node_is_not_due_at_exactly_its_deadline():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)

    assert index.due(0, 100.0) == []
    assert index.due(0, 100.000001) == ["node-a"]


def test_tracking_a_node_again_replaces_its_deadline():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)
    index.track(0, "node-a", 300.0)

    assert index.due(0, 200.0) == []
    assert index.tracked(0) == 1
    assert len(index) == 1


def test_a_node_that_moves_to_another_partition_leaves_the_old_one():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)

    index.track(1, "node-a", 100.0)

    assert index.tracked(0) == 0
    assert index.tracked(1) == 1
    assert index.due(0, 200.0) == []
    assert index.due(1, 200.0) == ["node-a"]
    assert len(index) == 1


def test_a_forgotten_node_is_no_longer_tracked_or_due():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)
    index.track(0, "node-b", 100.0)

    index.forget("node-a")

    assert index.due(0, 200.0) == ["node-b"]
    assert index.tracked(0) == 1
    assert len(index) == 1


def test_forgetting_an_untracked_node_changes_nothing():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)

    index.forget("node-z")

    assert index.tracked(0) == 1
    assert len(index) == 1


def test_a_forgotten_node_tracked_again_is_due_again():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)
    index.forget("node-a")

    index.track(0, "node-a", 150.0)

    assert index.due(0, 200.0) == ["node-a"]


def test_clear_forgets_every_partition():
    index = ExpiryIndex()
    index.track(0, "node-a", 100.0)
    index.track(1, "node-b", 100.0)

    index.clear()

    assert len(index) == 0
    assert index.tracked(0) == 0
    assert index.tracked(1) == 0
    assert index.due(0, 200.0) == []


# --- MassExpiryGuard -----------------------------------------------------------------


def guard() -> MassExpiryGuard:
    return MassExpiryGuard(ratio=0.5, min_nodes=10, hold_seconds=600.0)


def test_guard_allows_an_expiry_up_to_the_ratio(clock):
    mass = guard()

    assert mass.allows(0, due=4, tracked=10)
    assert mass.allows(0, due=5, tracked=10)
    assert mass.holds == 0
    assert mass.held_partitions == []


def test_guard_allows_any_expiry_in_a_partition_with_few_nodes(clock):
    mass = guard()

    assert mass.allows(0, due=9, tracked=9)
    assert mass.holds == 0
    assert mass.held_partitions == []


def test_guard_holds_an_expiry_over_the_ratio_and_counts_each_hold(clock):
    mass = guard()

    assert not mass.allows(0, due=6, tracked=10)
    clock.advance(5)
    assert not mass.allows(0, due=6, tracked=10)

    assert mass.holds == 2
    assert mass.held_partitions == [0]


def test_guard_holds_each_partition_on_its_own(clock):
    mass = guard()

    assert not mass.allows(3, due=10, tracked=10)
    assert mass.allows(1, due=1, tracked=10)
    assert not mass.allows(2, due=10, tracked=10)

    assert mass.held_partitions == [2, 3]
    assert mass.holds == 2


def test_guard_allows_a_held_expiry_still_due_after_the_hold(clock):
    mass = guard()
    assert not mass.allows(0, due=8, tracked=10)

    clock.advance(599.9)
    assert not mass.allows(0, due=8, tracked=10)
    clock.advance(0.1)
    assert mass.allows(0, due=8, tracked=10)

    assert mass.holds == 2
    assert mass.held_partitions == []


def test_guard_times_the_hold_from_the_first_held_tick(clock):
    mass = guard()
    assert not mass.allows(0, due=8, tracked=10)
    clock.advance(300)
    assert not mass.allows(0, due=8, tracked=10)

    clock.advance(300)

    assert mass.allows(0, due=8, tracked=10)


def test_a_partition_that_recovers_below_the_ratio_starts_a_new_hold(clock):
    mass = guard()
    assert not mass.allows(0, due=8, tracked=10)
    clock.advance(500)

    assert mass.allows(0, due=2, tracked=10)
    assert mass.held_partitions == []

    clock.advance(200)
    assert not mass.allows(0, due=8, tracked=10)
    assert mass.held_partitions == [0]
    clock.advance(599)
    assert not mass.allows(0, due=8, tracked=10)
    clock.advance(1)
    assert mass.allows(0, due=8, tracked=10)
    assert mass.holds == 3


def test_after_a_held_expiry_is_applied_the_next_one_is_held_again(clock):
    mass = guard()
    assert not mass.allows(0, due=8, tracked=10)
    clock.advance(600)
    assert mass.allows(0, due=8, tracked=10)

    assert not mass.allows(0, due=8, tracked=10)
    assert mass.held_partitions == [0]


# --- RequestLimiter ------------------------------------------------------------------


def test_limiter_refuses_a_second_request_within_the_interval(clock):
    limiter = RequestLimiter(60.0)

    assert limiter.allow("node-a")
    clock.advance(59.9)
    assert not limiter.allow("node-a")


def test_limiter_allows_the_request_again_once_the_interval_has_passed(clock):
    limiter = RequestLimiter(60.0)
    assert limiter.allow("node-a")

    clock.advance(60.0)

    assert limiter.allow("node-a")
    clock.advance(1)
    assert not limiter.allow("node-a")


def test_a_refused_request_does_not_push_the_interval_back(clock):
    limiter = RequestLimiter(60.0)
    assert limiter.allow("node-a")
    clock.advance(30)
    assert not limiter.allow("node-a")

    clock.advance(30)

    assert limiter.allow("node-a")


def test_limiter_counts_each_key_on_its_own(clock):
    limiter = RequestLimiter(60.0)

    assert limiter.allow("node-a")
    assert limiter.allow("node-b")
    assert not limiter.allow("node-a")
    assert not limiter.allow("node-b")


def test_limiter_with_no_interval_allows_every_request(clock):
    limiter = RequestLimiter(0.0)

    assert limiter.allow("node-a")
    assert limiter.allow("node-a")


def test_limiter_at_max_keys_forgets_the_keys_whose_interval_has_passed(clock):
    limiter = RequestLimiter(60.0, max_keys=3)
    for key in ("node-a", "node-b", "node-c"):
        assert limiter.allow(key)
    clock.advance(61)

    assert limiter.allow("node-d")

    assert set(limiter._last) == {"node-d"}
    assert limiter.allow("node-a")


def test_limiter_at_max_keys_keeps_refusing_keys_still_within_their_interval(clock):
    limiter = RequestLimiter(60.0, max_keys=3)
    assert limiter.allow("node-a")
    clock.advance(30)
    assert limiter.allow("node-b")
    assert limiter.allow("node-c")
    clock.advance(31)

    assert limiter.allow("node-d")

    assert set(limiter._last) == {"node-b", "node-c", "node-d"}
    assert not limiter.allow("node-b")
    assert limiter.allow("node-a")


def test_limiter_memory_stays_within_max_keys_when_every_key_is_recent(clock):
    limiter = RequestLimiter(60.0, max_keys=3)

    for number in range(10):
        limiter.allow(f"node-{number}")

    assert len(limiter._last) <= 3
