"""Retention of journal chains: the pure decisions case by case and by property, then `snapshot
prune` on real backups of a real etcd and real sealed segments in the local store and moto's
two regions (dry run, the window-start base, the newest chain, orphans, an interrupted prune)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from etcdops.backup.retention import Candidate, Condition, decide
from etcdops.cli.main import app
from etcdops.config import RetentionConfig
from etcdops.errors import StorageError
from etcdops.journal.chain import window
from etcdops.journal.listing import ChainFolder, ChainSummary, ListedSegment, list_chains
from etcdops.journal.prune import prune
from etcdops.journal.retention import decide_chains, reaches
from etcdops.report import LogReporter
from etcdops.stores.local import LocalStore
from tests.journal.chains import NOW, Span, Timeline, chain_keys, write_chain

DAY = 24 * 3600.0
H = timedelta(hours=1)
V, U, D, INC = Condition.VERIFIED, Condition.UNCHECKED, Condition.DAMAGED, Condition.INCOMPLETE


# --- the pure decisions -----------------------------------------------------------------------


def summary(base: str, last_change_at: datetime, segments: int = 2) -> ChainSummary:
    """A chain of base with `segments` listed segments whose newest change is last_change_at."""
    listed = tuple(ListedSegment(base, 10 * n + 1, 10 * n + 10, f"{base}/{n}.o", f"{base}/{n}.m")
                   for n in range(segments))
    folder = ChainFolder(base, listed, (), 100, last_change_at)
    return ChainSummary(folder, window(base, 0, listed), last_change_at - H, last_change_at, ())


def backup(name: str, hours_ago: float, condition: Condition = V) -> Candidate:
    return Candidate(name, NOW - timedelta(hours=hours_ago), condition)


def chain_actions(chains, candidates, keep_within=DAY, keep_min=1):
    decided = decide(candidates, keep_within=keep_within, keep_min=keep_min, now=NOW,
                     reaches=reaches(chains))
    return ({d.candidate.id: d.keep for d in decided},
            {c.chain.base_backup_id: (c.keep, c.orphan) for c in
             decide_chains(chains, decided, keep_within=keep_within, now=NOW)})


@pytest.mark.parametrize(
    ("backups", "chains", "kept", "chain_kept"),
    [
        # hourly backups, each chain reaching the next: the one before the window's start is
        # kept, its chain too; the older ones go with their chains
        ([backup("a", 50), backup("b", 26), backup("c", 23)],
         [summary("a", NOW - 26 * H), summary("b", NOW - 23 * H), summary("c", NOW)],
         {"b", "c"}, {"a": (False, False), "b": (True, False), "c": (True, False)}),
        # the chain before the window ends before it: its base is not needed for the window
        ([backup("a", 50), backup("b", 26), backup("c", 23)],
         [summary("b", NOW - 25 * H), summary("c", NOW)],
         {"c"}, {"b": (False, False), "c": (True, False)}),
        # backups stopped days ago: the newest verified one and its whole chain stay
        ([backup("a", 100), backup("b", 80)],
         [summary("a", NOW - 80 * H), summary("b", NOW - 70 * H)],
         {"b"}, {"a": (False, False), "b": (True, False)}),
        # a damaged base: the covering base is the newest verified one before the window
        ([backup("a", 50), backup("b", 26, D), backup("c", 23)],
         [summary("a", NOW - 20 * H), summary("b", NOW - 23 * H), summary("c", NOW)],
         {"a", "c"}, {"a": (True, False), "b": (False, False), "c": (True, False)}),
        # orphans: an old one goes, a recent one stays, one from the future stays
        ([backup("c", 1)],
         [summary("old", NOW - 25 * H), summary("new", NOW - 2 * H),
          summary("ahead", NOW + 2 * H), summary("c", NOW)],
         {"c"}, {"old": (False, True), "new": (True, True), "ahead": (True, True),
                 "c": (True, False)}),
        # an object without a manifest is no base: its chain is an orphan, dated by its changes
        ([backup("c", 1), backup("x", 30, INC)], [summary("x", NOW - 3 * H), summary("c", NOW)],
         {"c"}, {"x": (True, True), "c": (True, False)}),
    ],
)
def test_chain_table(backups, chains, kept, chain_kept):
    actions, chain_decisions = chain_actions(chains, backups)
    assert {name for name, keep in actions.items() if keep} == kept
    assert chain_decisions == chain_kept


def test_every_chain_decision_says_why():
    chains = [summary("a", NOW - 26 * H), summary("b", NOW - 23 * H), summary("o", NOW - 30 * H)]
    decided = decide([backup("a", 50), backup("b", 26)], keep_within=DAY, keep_min=1, now=NOW,
                     reaches=reaches(chains))
    reasons = {d.candidate.id: d.reasons for d in decided}
    assert reasons["b"] == (
        "the newest verified backup",
        "base of the chain that covers the window's start (the chain reaches until 23h00m "
        "ago, the window starts 24h00m ago)",
    )
    why = {c.chain.base_backup_id: c.reasons for c in
           decide_chains(chains, decided, keep_within=DAY, now=NOW)}
    assert why["a"] == ("its base backup is deleted",)
    assert why["b"] == ("its base backup is kept",)
    assert why["o"] == ("its base backup is not in this store, and its newest change is older "
                        "than 24h00m",)


@settings(max_examples=300, deadline=None)
@given(
    backups=st.lists(st.tuples(st.floats(-5, 120), st.sampled_from([V, U, D]),
                               st.none() | st.floats(-5, 120)), max_size=12),
    orphans=st.lists(st.floats(-5, 120), max_size=3),
    keep_min=st.integers(1, 4),
    keep_hours=st.floats(1, 72),
)
def test_chain_invariants(backups, orphans, keep_min, keep_hours):
    """(hours ago, condition, its chain's newest change in hours ago or no chain) per backup."""
    candidates = [backup(f"b{i}", h, c) for i, (h, c, _) in enumerate(backups)]
    chains = [summary(f"b{i}", NOW - timedelta(hours=r)) for i, (_, _, r) in enumerate(backups)
              if r is not None]
    chains += [summary(f"orphan{i}", NOW - timedelta(hours=r)) for i, r in enumerate(orphans)]
    keep_within = keep_hours * 3600
    start = NOW - timedelta(seconds=keep_within)
    actions, chain_decisions = chain_actions(chains, candidates, keep_within, keep_min)
    reach = reaches(chains)
    # a chain's segments go exactly when their base goes, never before
    for chain in chains:
        keep, orphan = chain_decisions[chain.base_backup_id]
        if chain.base_backup_id in actions:
            assert not orphan and keep == actions[chain.base_backup_id]
        else:
            assert orphan and keep == (chain.last_change_at >= start)
    verified = sorted((c for c in candidates if c.condition is V),
                      key=lambda c: (c.created_at, c.id))
    if verified:  # the newest chain is never broken
        assert actions[verified[-1].id]
    before = [c for c in verified if c.created_at < start]
    if before and reach.get(before[-1].id, start - H) >= start:
        assert actions[before[-1].id]  # the window's start stays restorable
    # the chains add one protected backup at most to what retention keeps without them
    without = {d.candidate.id for d in decide(candidates, keep_within=keep_within,
                                              keep_min=keep_min, now=NOW) if d.keep}
    with_chains = {name for name, keep in actions.items() if keep}
    assert without <= with_chains and len(with_chains - without) <= 1


# --- on real stores ---------------------------------------------------------------------------


def run_prune(timeline: Timeline, *args: str, now: datetime = NOW):
    done = CliRunner().invoke(
        app, ["snapshot", "prune", "--config", str(timeline.toml),
              "--now", now.strftime("%Y-%m-%dT%H:%M:%S%z"), *args],
        env={"ETCDOPS_RETENTION_KEEP_MIN": "1"},
    )
    assert done.exit_code == 0, done.output
    return done


def everything(timeline: Timeline) -> dict[str, list[str]]:
    return {name: sorted(info.key for info in store.list(""))
            for name, store in timeline.stores().items()}


def test_prune_deletes_chains_with_their_bases_and_keeps_the_windows_start(timeline):
    t = timeline
    before = everything(t)
    planned = json.loads(run_prune(t, "--dry-run", "-o", "json").stdout)
    assert everything(t) == before  # a dry run deletes nothing
    text = run_prune(t, "--dry-run").stdout
    assert ".seg." not in text  # one line a chain, never one a segment
    for base in (t.a.id, t.b.id, t.c.id, t.d.id, t.old_orphan, t.new_orphan):
        assert base in text
    done = json.loads(run_prune(t, "-o", "json").stdout)

    for name, result in done["stores"].items():
        planned_store = planned["stores"][name]
        assert result["decisions"] == planned_store["decisions"], name
        assert [c | {"action": None} for c in result["chains"]] == [
            c | {"action": None} for c in planned_store["chains"]]
        actions = {d["id"]: d["action"] for d in result["decisions"]}
        assert actions == {t.a.id: "delete", t.b.id: "keep", t.c.id: "keep", t.d.id: "keep"}
        [b] = [d for d in result["decisions"] if d["id"] == t.b.id]
        assert any(r.startswith("base of the chain that covers the window's start")
                   for r in b["reasons"])
        chains = {c["base_backup_id"]: c for c in result["chains"]}
        assert {base: c["action"] for base, c in chains.items()} == {
            t.a.id: "delete", t.b.id: "keep", t.c.id: "keep", t.d.id: "keep",
            t.old_orphan: "delete", t.new_orphan: "keep"}
        assert chains[t.a.id]["segments"] == 2 and not chains[t.a.id]["orphan"]
        assert chains[t.a.id]["first_revision"] == t.a.etcd.revision + 1
        assert chains[t.a.id]["last_revision"] == t.b.etcd.revision - 4
        assert chains[t.old_orphan]["orphan"]
        assert sorted(result["deleted_chains"]) == sorted([t.a.id, t.old_orphan])
        assert result["deleted"] == [t.a.id]
        assert result["deleted_segments"] == 3

    after = everything(t)
    for name, store in t.stores().items():
        assert not [key for key in after[name] if t.a.id in key], name
        assert chain_keys(store, t.config.cluster, t.a.id) == [], name
        assert chain_keys(store, t.config.cluster, t.old_orphan) == [], name
        for kept in (t.b.id, t.c.id, t.d.id, t.new_orphan):
            assert chain_keys(store, t.config.cluster, kept), (name, kept)

    # two hours later c is the base before the window's start, and b's chain ends before it
    later = json.loads(run_prune(t, "-o", "json", now=NOW + 2 * H).stdout)
    for result in later["stores"].values():
        assert result["deleted"] == [t.b.id]
        assert result["deleted_chains"] == [t.b.id]
        [c] = [d for d in result["decisions"] if d["id"] == t.c.id]
        assert any(r.startswith("base of the chain that covers") for r in c["reasons"])
    # backups stopped ten days ago: the newest backup and its chain are never broken
    stopped = json.loads(run_prune(t, "-o", "json", now=NOW + 240 * H).stdout)
    for result in stopped["stores"].values():
        assert sorted(result["deleted_chains"]) == sorted([t.c.id, t.new_orphan])
        assert [d["id"] for d in result["decisions"] if d["action"] == "keep"] == [t.d.id]
    for store in t.stores().values():
        assert list_chains(store, t.config.cluster).keys() == {t.d.id}
        assert len(list_chains(store, t.config.cluster)[t.d.id].segments) == 2


class Interrupted(Exception):
    pass


class InterruptedStore:
    """A real local store whose deletes stop after `allowed`, as a prune killed there."""

    def __init__(self, store: LocalStore, allowed: int) -> None:
        self._store, self._allowed = store, allowed

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def delete(self, key: str) -> None:
        if self._allowed == 0:
            raise StorageError("interrupted", "run it again")
        self._allowed -= 1
        self._store.delete(key)

    def delete_many(self, keys) -> None:  # in order, as the local store does
        for key in keys:
            self.delete(key)


def test_an_interrupted_prune_never_leaves_a_chain_that_lies(timeline, tmp_path):
    t = timeline
    pristine = tmp_path / "pristine"
    shutil.copytree(t.config.local.dir, pristine)
    policy = RetentionConfig(keep_within=DAY, keep_min=1)
    # a's chain: 2 manifests, 2 objects; a: manifest, check, object; the old orphan: 2 files
    for allowed in range(10):
        root = tmp_path / f"interrupted-{allowed}"
        shutil.copytree(pristine, root)
        store = LocalStore(root, "local")
        report = prune({"local": InterruptedStore(store, allowed)}, t.config.cluster, policy,
                       NOW, LogReporter())
        assert set(report.failures) == ({"local"} if allowed < 9 else set()), allowed
        base_listed = any(t.a.id in info.key and info.key.endswith(".manifest.json")
                          and "/snapshots/" in info.key for info in store.list(""))
        chain = list_chains(store, t.config.cluster).get(t.a.id)
        manifests = chain.segments if chain else ()
        if base_listed:  # what is left of its chain is its start, with no hole
            found = window(t.a.id, t.a.etcd.revision, manifests)
            assert found.holes == () and len(found.path) == len(manifests), allowed
        else:  # the base went last: nothing of its chain is left
            assert manifests == () and not (chain and chain.others), allowed
        again = prune({"local": store}, t.config.cluster, policy, NOW, LogReporter())
        assert again.failures == {}
        chains = list_chains(store, t.config.cluster)
        assert {base for base, folder in chains.items() if folder.segments} == {
            t.b.id, t.c.id, t.d.id, t.new_orphan}, allowed
        leftovers = {base for base, folder in chains.items() if not folder.segments}
        if leftovers:
            # stopped between an orphan's manifest and its object: an object without a
            # manifest is no segment, dated by the store, and goes once older than keep_within
            assert leftovers == {t.old_orphan} and allowed == 8
            later = datetime.now(UTC) + timedelta(seconds=DAY) + H
            prune({"local": store}, t.config.cluster, policy, later, LogReporter())
            assert t.old_orphan not in list_chains(store, t.config.cluster)


def test_a_chain_whose_newest_manifest_is_damaged_is_dated_by_the_store(tmp_path, age_identity):
    store = LocalStore(tmp_path / "store", "local")
    orphan = "20261101T000000Z-0000cc"
    [_, newest] = write_chain({"local": store}, "chains", orphan,
                              Span(11, 20, NOW - 300 * H, H), age_identity.recipient)
    damaged = tmp_path / "store" / newest.manifest_key
    damaged.write_bytes(damaged.read_bytes()[:30])
    policy = RetentionConfig(keep_within=DAY, keep_min=1)
    now = datetime.now(UTC)
    [kept] = prune({"local": store}, "chains", policy, now, LogReporter()).stores
    [decision] = kept.chains
    assert decision.keep and decision.orphan  # its changes are old, but its files are new
    assert decision.chain.last_change_at > now - H
    [note] = decision.chain.notes
    assert "is unreadable" in note and newest.manifest_key in note
    later = now + timedelta(seconds=DAY) + H
    [pruned] = prune({"local": store}, "chains", policy, later, LogReporter()).stores
    assert pruned.deleted_chains == [orphan] and pruned.deleted_segments == 2
    assert list(store.list("")) == []
