"""The chain's provable window, case by case and by property (a pure function: no stores)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdops.journal.chain import Kind, window
from tests.journal.samples import BASE, manifest

BASE_REVISION = 100


def chain(*ranges, base=BASE):
    return [manifest(first, last, base=base) for first, last in ranges]


def found(result):
    return [(f.kind.value, f.first_revision, f.last_revision) for f in result.findings]


@pytest.mark.parametrize(
    ("ranges", "last", "path", "findings"),
    [
        # no segment yet: the base alone
        ([], 100, [], []),
        # a clean chain, given in any order
        ([(111, 120), (101, 110), (121, 121)], 121, [(101, 110), (111, 120), (121, 121)], []),
        # the first segment is missing: nothing past the base is provable
        ([(111, 120)], 100, [], [("hole", 101, 110)]),
        # a hole in the middle cuts the window there, and every later hole is named too
        ([(101, 110), (115, 120), (121, 130), (140, 150)], 110, [(101, 110)],
         [("hole", 111, 114), ("hole", 131, 139)]),
        # a segment inside another adds nothing (the longer one is read)
        ([(101, 120), (105, 110), (121, 125)], 125, [(101, 120), (121, 125)],
         [("overlap", 105, 110)]),
        # the same first revision: the longer wins, the shorter is an overlap
        ([(101, 105), (101, 120)], 120, [(101, 120)], [("overlap", 101, 105)]),
        # a partial overlap extends the window; the replay skips what it applied already
        ([(101, 110), (106, 120)], 120, [(101, 110), (106, 120)], [("overlap", 106, 110)]),
        # segments at or before the base's revision: the base holds those revisions
        ([(90, 100), (95, 105)], 105, [(95, 105)], [("overlap", 90, 100), ("overlap", 95, 100)]),
    ],
)
def test_window_table(ranges, last, path, findings):
    result = window(BASE, BASE_REVISION, chain(*ranges))
    assert result.last_revision == last
    assert [(m.first_revision, m.last_revision) for m in result.path] == path
    assert found(result) == findings
    assert result.complete == (not any(kind == "hole" for kind, _, _ in findings))


def test_the_window_ends_at_the_last_change_the_journal_saw():
    result = window(BASE, BASE_REVISION, chain((101, 110), (111, 130)))
    assert result.last_change_at == result.path[-1].last_change_at
    assert window(BASE, BASE_REVISION, []).last_change_at is None


def test_every_finding_has_its_reason():
    result = window(BASE, BASE_REVISION, chain((101, 110), (105, 108), (115, 120)))
    overlap, hole = result.findings
    assert overlap.reason == (
        f"segment 105-108 of chain {BASE} holds only revisions 105 to 108, already in "
        f"segment 101-110 of chain {BASE}"
    )
    assert hole.reason == (
        f"no segment holds revisions 111 to 114, between segment 101-110 of chain {BASE} and "
        f"segment 115-120 of chain {BASE}"
    )
    assert result.holes == (hole,)


def test_a_segment_of_another_chain_is_left_out():
    other = manifest(101, 200, base="20261125T110000Z-ffffff")
    result = window(BASE, BASE_REVISION, [*chain((101, 110)), other])
    assert result.last_revision == 110
    [finding] = result.findings
    assert finding.kind is Kind.FOREIGN
    assert "extends another backup than" in finding.reason


@st.composite
def chains(draw):
    """Segments tiling revisions 101..end, some dropped, some added that overlap."""
    end = draw(st.integers(101, 160))
    cuts = sorted(draw(st.sets(st.integers(101, end), max_size=12)) | {end})
    tiles, first = [], BASE_REVISION + 1
    for cut in cuts:
        if cut >= first:
            tiles.append((first, cut))
            first = cut + 1
    kept = [t for t in tiles if draw(st.integers(0, 4))]  # about one in five dropped
    extra = draw(st.lists(
        st.tuples(st.integers(90, 160), st.integers(0, 15)).map(lambda t: (t[0], t[0] + t[1])),
        max_size=4,
    ))
    return tiles, kept + extra


def covered(ranges):
    return {r for first, last in ranges for r in range(first, last + 1)}


@settings(max_examples=300, deadline=None)
@given(chains(), st.randoms())
def test_window_properties(case, rng):
    tiles, ranges = case
    shuffled = list(ranges)
    rng.shuffle(shuffled)
    result = window(BASE, BASE_REVISION, chain(*shuffled))
    have = covered(ranges)
    # the window is the longest run of revisions after the base that segments hold
    end = BASE_REVISION
    while end + 1 in have:
        end += 1
    assert result.last_revision == end
    # the path holds every one of those revisions, in order, and nothing beyond
    assert covered((m.first_revision, m.last_revision) for m in result.path) >= set(
        range(BASE_REVISION + 1, end + 1))
    assert all(m.last_revision <= end for m in result.path)
    assert all(a.first_revision < b.first_revision and a.last_revision < b.last_revision
               for a, b in zip(result.path, result.path[1:], strict=False))
    # holes are exactly the revisions after the base, up to the newest segment, held nowhere
    newest = max((last for _, last in ranges), default=BASE_REVISION)
    holes = covered((h.first_revision, h.last_revision) for h in result.holes)
    assert holes == set(range(BASE_REVISION + 1, newest + 1)) - have
    assert result.complete == (not holes)
    # the order the store listed them in changes nothing
    assert window(BASE, BASE_REVISION, chain(*ranges)) == result


@settings(max_examples=100, deadline=None)
@given(chains(), st.randoms())
def test_an_exact_tiling_has_no_finding(case, rng):
    tiles, _ = case
    result = window(BASE, BASE_REVISION, chain(*rng.sample(tiles, len(tiles))))
    assert result.findings == ()
    assert [(m.first_revision, m.last_revision) for m in result.path] == tiles
    assert result.last_revision == tiles[-1][1]
