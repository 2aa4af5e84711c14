"""The segment format: round trips of every kind of change, and a strict reader and writer."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdops.errors import IntegrityError
from etcdops.etcd.watch import Change, Revision
from etcdops.journal import segment
from etcdops.journal.segment import HEADER, SegmentBuffer, decode, encode
from tests.journal.samples import EVERY_KIND, delete, put


def test_every_kind_of_change_round_trips():
    data = encode(EVERY_KIND)
    assert data.startswith(HEADER) and data.endswith(b"\n")
    assert list(decode(data, "test")) == EVERY_KIND


def test_reads_from_a_stream_of_lines(tmp_path):
    path = tmp_path / "segment"
    path.write_bytes(encode(EVERY_KIND))
    with path.open("rb") as lines:
        assert list(decode(lines, str(path))) == EVERY_KIND


def test_the_documented_example_is_a_segment():
    doc = segment.__doc__
    example = doc[doc.index(segment.FORMAT + "\n"):].split("\n\n")[0] + "\n"
    [first, second] = decode(example.encode(), "the docstring")
    assert first == Revision(12, (put(12, b"/registry/a", b"x"),))
    assert second == Revision(13, (delete(13, b"/registry/b"),))


def test_a_line_is_compact_json_with_base64():
    line = encode([Revision(5, (put(5, b"\xff", b""),))]).splitlines()[1]
    assert json.loads(line) == {
        "revision": 5, "type": "put", "key": base64.b64encode(b"\xff").decode(), "value": "",
        "create_revision": 5, "version": 1, "lease": 0,
    }
    assert b" " not in line


@st.composite
def histories(draw):
    """Consecutive revisions of puts and deletes, each key at most once per revision."""
    start = draw(st.integers(1, 10**12))
    revisions, versions = [], {}
    for offset in range(draw(st.integers(1, 8))):
        revision = start + offset
        keys = draw(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=4,
                             unique=True))
        changes = []
        for key in keys:
            if key in versions and draw(st.booleans()):
                del versions[key]
                changes.append(delete(revision, key))
                continue
            create, version = versions.get(key, (revision, 0))
            versions[key] = (create, version + 1)
            changes.append(put(revision, key, draw(st.binary(max_size=40)), create=create,
                               version=version + 1, lease=draw(st.integers(0, 2**63 - 1))))
        revisions.append(Revision(revision, tuple(changes)))
    return revisions


@settings(max_examples=150, deadline=None)
@given(histories())
def test_any_history_round_trips(history):
    assert list(decode(encode(history), "t")) == history


def test_the_buffer_counts_what_a_manifest_says():
    moments = iter(range(10))
    buffer = SegmentBuffer(clock=lambda: next(moments))
    for revision in EVERY_KIND:
        buffer.add(revision)
    assert (buffer.first_revision, buffer.last_revision) == (100, 103)
    assert (buffer.revisions, buffer.events) == (4, 6)
    assert (buffer.first_seen, buffer.last_seen) == (0, 3)
    assert buffer.size == len(buffer.data()) == len(encode(EVERY_KIND))


@pytest.mark.parametrize(
    ("revisions", "problem"),
    [
        ([Revision(5, (put(5, b"a"),)), Revision(4, (put(4, b"b"),))], "out of order"),
        # the watch must join a revision's fragments: a revision given twice is split
        ([Revision(5, (put(5, b"a"),)), Revision(5, (put(5, b"b"),))], "revision 5 is split"),
        ([Revision(5, (put(5, b"a"),)), Revision(7, (put(7, b"b"),))], "revision 6 is missing"),
        ([Revision(5, ())], "no changes"),
        ([Revision(5, (put(5, b"a"), delete(5, b"a")))], "one key twice"),
        ([Revision(5, (put(4, b"a"),))], "mod revision 4 in revision 5"),
        ([Revision(5, (Change("compact", b"a", b"", 0, 5, 0, 0),))], "put or a delete"),
        ([Revision(5, (put(5, b"a", create=3, version=1),))], "version 1 does not fit"),
        ([Revision(5, (put(5, b"a", create=6),))], "create_revision 6"),
        ([Revision(5, (put(5, b"a", lease=-1),))], "lease -1"),
        ([Revision(0, (put(0, b"a", create=1),))], "revision 0 is not an etcd revision"),
    ],
)
def test_the_writer_refuses_what_the_format_forbids(revisions, problem):
    with pytest.raises(ValueError, match=problem):
        encode(revisions)


def test_an_empty_segment_is_never_written():
    with pytest.raises(ValueError, match="empty segment"):
        SegmentBuffer().data()


def line(**record):
    return json.dumps(record).encode() + b"\n"


def b64(data):
    return base64.b64encode(data).decode()


PUT5 = dict(revision=5, type="put", key=b64(b"a"), value="", create_revision=5, version=1,
            lease=0)
DEL6 = dict(revision=6, type="delete", key=b64(b"a"))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "line 1: the first line is ''"),
        (b"etcdops-journal/2\n" + line(**PUT5), "not 'etcdops-journal/1'"),
        (b"etcdops-journal/1", "line 1: the first line"),  # no newline: not the header
        (HEADER, "holds no change"),
        (HEADER + line(**PUT5) + line(**DEL6) + line(**PUT5), "line 4: revision 5 is split"),
        (HEADER + line(**DEL6) + line(**PUT5), "line 3: revision 5 is out of order"),
        (HEADER + line(**PUT5) + line(**DEL6 | {"revision": 8}), "revisions 6 to 7 are missing"),
        (HEADER + line(**PUT5) + line(**PUT5 | {"version": 2, "create_revision": 4}),
         "changes one key twice"),
        (HEADER + line(**PUT5)[:-1], "line 2: the last line is cut short"),
        (HEADER + b"[1, 2]\n", "not a JSON object"),
        (HEADER + b"{not json}\n", "line 2"),
        (HEADER + line(**PUT5 | {"type": "compact"}), "neither put nor delete"),
        (HEADER + line(**PUT5 | {"prev_kv": ""}), "members"),
        (HEADER + line(**{k: v for k, v in PUT5.items() if k != "lease"}), "members"),
        (HEADER + line(**DEL6 | {"value": ""}), "members"),
        (HEADER + line(**PUT5)[:-2] + b', "lease": 0}\n', "given twice"),
        (HEADER + line(**PUT5 | {"revision": "5"}), "integers"),
        (HEADER + line(**PUT5 | {"lease": True}), "integers"),
        (HEADER + line(**PUT5 | {"key": "not base64!"}), "line 2"),
        (HEADER + line(**PUT5 | {"version": 3}), "version 3 does not fit"),
        (HEADER + line(**PUT5 | {"lease": 2**63}), "not an etcd lease id"),
    ],
)
def test_the_reader_refuses_damage(data, problem):
    with pytest.raises(IntegrityError, match="segment-x is not a valid journal segment") as info:
        list(decode(data, "segment-x"))
    assert problem in info.value.message
