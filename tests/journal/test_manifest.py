"""Segment manifests: round trip, strictness, and the keys of a chain in a store."""

from __future__ import annotations

import dataclasses
import json

import pytest

from etcdops.errors import IntegrityError
from etcdops.journal.manifest import (
    SegmentKeys,
    SegmentManifest,
    chain_prefix,
    journal_prefix,
    segment_key,
)
from tests.journal.samples import BASE, manifest


def test_round_trip_is_exact_and_stable():
    original = manifest()
    data = original.to_json()
    assert SegmentManifest.from_json(data, "m") == original
    assert SegmentManifest.from_json(data, "m").to_json() == data
    doc = json.loads(data)
    assert doc["first_change_at"] == "2026-11-25T12:01:46.250Z"  # UTC, milliseconds, as backups
    assert doc["format"] == "etcdops-journal/1" and doc["schema_version"] == 1
    assert doc["tool"] == {"name": "etcdops", "version": "0.1.0"}


def edited(**changes) -> bytes:
    doc = json.loads(manifest().to_json())
    for name, value in changes.items():
        if value is None:
            del doc[name]
        else:
            doc[name] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{", "Expecting"),
        (b"[]", "'list' object has no attribute"),
        (edited(schema_version=2), "unsupported schema_version 2"),
        (edited(format="etcdops-journal/2"), "unsupported segment format"),
        (edited(events=None), "events"),
        (edited(surprise=1), "surprise"),
        (edited(previous_revision=99), "does not follow previous revision 99"),
        (edited(revisions=3), "3 revisions from 101 to 110"),
        (edited(events=9), "9 changes in 10 revisions"),
        (edited(last_change_at="2026-11-25T11:00:00.000Z"), "last change is older"),
        (edited(created_at="yesterday"), "yesterday"),
        (edited(object_key=segment_key("", "prod", BASE, 101, 111)), "not where it belongs"),
        (edited(object_key=segment_key("", "prod", "other", 101, 110)), "not where it belongs"),
        (edited(object_key=f"prod/snapshots/{BASE}.db.zst.age"), "not where it belongs"),
    ],
)
def test_from_json_refuses_what_is_not_a_manifest(data, problem):
    with pytest.raises(IntegrityError, match="segment manifest s3://b/k is unreadable") as info:
        SegmentManifest.from_json(data, "s3://b/k")
    assert problem in info.value.message


def test_the_object_key_may_carry_a_store_prefix():
    key = "backups/" + segment_key("", "prod", BASE, 101, 110)
    suffixed = key.replace(".seg.zst.age", ".seg.manifest.json")
    assert manifest(object_key=key).manifest_key == suffixed


def test_layout_beside_the_snapshots():
    assert journal_prefix("p/", "prod") == "p/prod/journal/"
    assert chain_prefix("", "prod", BASE) == f"prod/journal/{BASE}/"
    assert segment_key("", "prod", BASE, 101, 110) == (
        f"prod/journal/{BASE}/00000000000000000101-00000000000000000110.seg.zst.age"
    )
    keys = SegmentKeys.of(segment_key("", "prod", BASE, 7, 9))
    assert keys == SegmentKeys.of(keys.manifest)
    assert keys.manifest.endswith("00000000000000000007-00000000000000000009.seg.manifest.json")


def test_a_listing_is_in_revision_order():
    ranges = [(9, 10), (11, 99), (100, 100), (101, 10**12)]
    keys = [segment_key("", "c", BASE, a, b) for a, b in ranges]
    assert sorted(reversed(keys)) == keys


@pytest.mark.parametrize(
    "key",
    [f"prod/snapshots/2026/11/25/{BASE}.manifest.json", "prod/journal/b/1-2.seg.zst.age",
     "prod/journal/b/00000000000000000001-00000000000000000002.seg.json"],
)
def test_keys_of_other_things_are_refused(key):
    with pytest.raises(ValueError, match="not a journal segment's key"):
        SegmentKeys.of(key)


def test_the_name_says_chain_and_revisions():
    assert manifest().name == f"segment 101-110 of chain {BASE}"


def test_a_manifest_that_contradicts_itself_is_not_built():
    with pytest.raises(ValueError, match="30 revisions from 101 to 110"):
        dataclasses.replace(manifest(), revisions=30)
