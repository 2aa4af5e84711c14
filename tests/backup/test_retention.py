"""The retention policy, case by case (a pure function: no etcd, no stores)."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdops.backup.retention import Candidate, Condition, decide, worth_confirming

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DAY = 24 * 3600.0
V, D, INC, U = Condition.VERIFIED, Condition.DAMAGED, Condition.INCOMPLETE, Condition.UNCHECKED


def backups(*spec):
    """(hours ago, condition) pairs -> candidates named b<hours>."""
    return [Candidate(f"b{h:g}", NOW - timedelta(hours=h), c) for h, c in spec]


def kept(decisions):
    return {d.candidate.id for d in decisions if d.keep}


@pytest.mark.parametrize(
    ("spec", "keep_min", "expected_kept"),
    [
        # hourly backups over two days: the last 24 hours stay, the rest go
        ([(h, V) for h in range(48)], 3, {f"b{h}" for h in range(25)}),
        # nothing new for three days: the newest verified ones stay whatever their age
        ([(72, V), (73, V), (74, V), (75, V), (76, V)], 3, {"b72", "b73", "b74"}),
        # keep_min 0 still never deletes the newest verified backup
        ([(50, V), (60, V)], 0, {"b50"}),
        # a damaged newest backup does not count as the newest verified one
        ([(30, D), (40, V), (50, V)], 1, {"b40"}),
        # damaged and incomplete ones are deleted once old, kept while recent
        ([(1, INC), (2, D), (30, INC), (31, D), (32, V)], 1, {"b1", "b2", "b32"}),
        # no verified backup at all: only the window protects
        ([(5, D), (30, D)], 3, {"b5"}),
        # an unchecked newest backup (changed since checked, or never checked) counts for
        # nothing: the newest verified one is kept, and the unchecked one goes once old
        ([(30, U), (40, V), (50, V)], 1, {"b40"}),
        ([(30, U), (31, U)], 3, set()),
        ([(2, U), (40, V)], 1, {"b2", "b40"}),
        # exactly at the window's edge is still inside it
        ([(24, V), (100, V)], 0, {"b24"}),
        ([], 3, set()),
    ],
)
def test_policy_table(spec, keep_min, expected_kept):
    decisions = decide(backups(*spec), keep_within=DAY, keep_min=keep_min, now=NOW)
    assert kept(decisions) == expected_kept
    assert len(decisions) == len(spec)


def test_backups_from_the_future_are_never_deleted():
    future = [Candidate("ahead", NOW + timedelta(hours=5), V), *backups((30, V), (40, V))]
    decisions = decide(future, keep_within=DAY, keep_min=1, now=NOW)
    assert kept(decisions) == {"ahead"}
    [ahead] = [d for d in decisions if d.candidate.id == "ahead"]
    assert "clocks disagree" in ahead.reasons[0]


def test_every_decision_says_why():
    decisions = decide(backups((1, V), (30, V), (31, V), (40, INC)), keep_within=DAY,
                       keep_min=2, now=NOW)
    reasons = {d.candidate.id: d.reasons for d in decisions}
    assert reasons["b1"] == ("the newest verified backup", "within keep_within (24h00m)")
    assert reasons["b30"] == ("one of the 2 newest verified backups (keep_min)",)
    assert reasons["b31"] == ("older than keep_within (24h00m) and not protected",)
    assert reasons["b40"] == ("incomplete and older than 24h00m",)
    assert [d.candidate.id for d in decisions] == ["b40", "b31", "b30", "b1"]


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.tuples(st.floats(-10, 200), st.sampled_from(list(Condition))), max_size=30),
    keep_min=st.integers(0, 5),
    keep_hours=st.floats(0, 72),
)
def test_invariants(ages, keep_min, keep_hours):
    candidates = [Candidate(f"b{i}", NOW - timedelta(hours=h), c) for i, (h, c) in
                  enumerate(ages)]
    decisions = decide(candidates, keep_within=keep_hours * 3600, keep_min=keep_min, now=NOW)
    keep = kept(decisions)
    verified = sorted((c for c in candidates if c.condition is V), key=lambda c: (c.created_at,
                                                                                  c.id))
    if verified:
        assert verified[-1].id in keep  # the newest verified backup survives every policy
    for c in verified[-keep_min:] if keep_min else []:
        assert c.id in keep
    for c in candidates:
        if c.created_at > NOW or NOW - c.created_at <= timedelta(hours=keep_hours):
            assert c.id in keep
    assert all(d.reasons for d in decisions)


@pytest.mark.parametrize(
    ("spec", "keep_min", "expected"),
    [
        # the keep_min newest that could count, unchecked ones included, newest first
        ([(1, V), (2, U), (3, V), (4, V)], 2, ["b1", "b2"]),
        # damaged and incomplete ones are never worth a check; keep_min 0 still keeps one
        ([(1, D), (2, INC), (3, U), (4, V)], 0, ["b3"]),
        ([(1, D), (2, INC)], 3, []),
    ],
)
def test_worth_confirming_is_what_would_be_protected_if_unchecked_ones_proved_good(
    spec, keep_min, expected
):
    assert [c.id for c in worth_confirming(backups(*spec), keep_min)] == expected


def test_a_confirmation_or_a_problem_is_shown_in_the_reasons():
    confirmed = Candidate("good", NOW - timedelta(hours=30), V, "sha256 re-read just now")
    failed = Candidate("bad", NOW - timedelta(hours=29), D, "its sha256 is 1234...")
    reasons = {d.candidate.id: d.reasons for d in
               decide([confirmed, failed], keep_within=DAY, keep_min=1, now=NOW)}
    assert reasons["good"] == ("the newest verified backup (sha256 re-read just now)",)
    assert reasons["bad"] == ("damaged (its sha256 is 1234...) and older than 24h00m",)


def reaching(*spec):
    """(name, hours ago) pairs -> until when each backup's journal chain reaches."""
    return {name: NOW - timedelta(hours=h) for name, h in spec}


@pytest.mark.parametrize(
    ("spec", "reaches", "expected_kept"),
    [
        # the newest verified backup before the window's start is kept when its chain reaches
        # into the window: it is what the window's first hours are restored from
        ([(50, V), (30, V), (20, V)], reaching(("b30", 23)), {"b30", "b20"}),
        # its chain ends before the window starts: it restores nothing the window needs
        ([(50, V), (30, V), (20, V)], reaching(("b30", 25)), {"b20"}),
        # a newer one before the start whose chain ends before it (or that has no chain) does
        # not stand in for an older base whose chain reaches into the window
        ([(50, V), (30, V), (20, V)], reaching(("b50", 10), ("b30", 25)), {"b50", "b20"}),
        ([(24.5, V), (24.05, V), (23, V)], reaching(("b24.5", 23.9)), {"b24.5", "b23"}),
        # the newest one whose chain reaches in is enough: it covers the start
        ([(50, V), (30, V), (20, V)], reaching(("b50", 10), ("b30", 23)), {"b30", "b20"}),
        # an unchecked or damaged one is not a base retention relies on: the newest verified one
        # before it is, if its own chain reaches
        ([(50, V), (30, U), (20, V)], reaching(("b50", 23), ("b30", 10)), {"b50", "b20"}),
        ([(50, V), (30, D), (20, V)], reaching(("b30", 10)), {"b20"}),
        # at the edge: a chain reaching exactly the window's start covers it
        ([(30, V), (20, V)], reaching(("b30", 24)), {"b30", "b20"}),
    ],
)
def test_the_base_covering_the_windows_start_is_kept(spec, reaches, expected_kept):
    decisions = decide(backups(*spec), keep_within=DAY, keep_min=1, now=NOW, reaches=reaches)
    assert kept(decisions) == expected_kept


def test_the_covering_base_is_confirmed_before_anything_is_deleted():
    candidates = backups((50, V), (30, U), (2, V), (1, V))
    start = NOW - timedelta(seconds=DAY)
    assert [c.id for c in worth_confirming(candidates, 1)] == ["b1"]
    assert [c.id for c in worth_confirming(candidates, 1, reaches=reaching(("b30", 23)),
                                           window_start=start)] == ["b1", "b30"]
    assert [c.id for c in worth_confirming(candidates, 1, reaches=reaching(("b30", 25)),
                                           window_start=start)] == ["b1"]


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.tuples(st.floats(-10, 200), st.sampled_from(list(Condition)),
                            st.none() | st.floats(-10, 200)), max_size=20),
    keep_min=st.integers(0, 5),
    keep_hours=st.floats(1, 72),
)
def test_chains_only_ever_keep_the_one_base_more(ages, keep_min, keep_hours):
    candidates = [Candidate(f"b{i}", NOW - timedelta(hours=h), c)
                  for i, (h, c, _) in enumerate(ages)]
    reaches = {f"b{i}": NOW - timedelta(hours=r) for i, (_, _, r) in enumerate(ages)
               if r is not None}
    policy = dict(keep_within=keep_hours * 3600, keep_min=keep_min, now=NOW)
    without = kept(decide(candidates, **policy))
    with_chains = decide(candidates, **policy, reaches=reaches)
    added = kept(with_chains) - without
    assert without <= kept(with_chains) and len(added) <= 1
    start = NOW - timedelta(hours=keep_hours)
    covering = sorted((c for c in candidates if c.condition is V and c.created_at < start
                       and reaches.get(c.id, start - timedelta(1)) >= start),
                      key=lambda c: (c.created_at, c.id))
    if covering:  # every point from the window's start is restorable from a kept base
        assert covering[-1].id in kept(with_chains)
    for d in with_chains:
        if d.candidate.id in added:
            assert d.reasons[-1].startswith("base of the chain that covers the window's start")
