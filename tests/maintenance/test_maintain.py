"""The maintain service as the daemon calls it: compaction every run, defragmentation in the
window. The compact-then-defragment sequence on three members is in
tests/cli/test_maintenance_cli.py (through `etcdops maintain --force`)."""

from __future__ import annotations

import json
from dataclasses import replace

from etcdops.config import CompactionConfig
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance.maintain import maintain
from tests.maintenance.test_defrag import INSIDE, OUTSIDE, Events, config_for, sizes


def test_outside_the_window_it_only_compacts(etcd_single: LocalCluster, tmp_path) -> None:
    config = replace(config_for(etcd_single, tmp_path), compaction=CompactionConfig(retain=0.0))
    with EtcdSession(config.etcd) as session:
        session.put_many([(b"/registry/pods/default/web", b"v1"), (b"/registry/pods/x", b"v")])
        session.put_many([(b"/registry/pods/default/web", b"v2")])
    events = Events()
    result = maintain(config, events, now=OUTSIDE)
    assert result.compaction.compacted and result.compaction.revisions_dropped >= 2
    assert not result.compaction.physical  # defragmentation waits per member, when it runs
    assert result.defrag.skipped.startswith("outside the off-peak window")
    assert result.defrag.decisions == [] and events.lines == []
    doc = json.loads(json.dumps(result.as_dict()))
    assert doc["compaction"]["target_revision"] == result.compaction.target_revision
    assert doc["defrag"]["in_window"] is False


def test_dry_run_changes_nothing(etcd_churned3: LocalCluster, tmp_path) -> None:
    config = replace(config_for(etcd_churned3, tmp_path), compaction=CompactionConfig(retain=0.0))
    before = sizes(etcd_churned3)
    with EtcdSession(config.etcd) as session:
        revision = session.status(etcd_churned3.client_urls[0]).revision
        result = maintain(config, Events(), now=INSIDE, dry_run=True)
        # no compaction, no sample: the revision is where it was
        assert session.status(etcd_churned3.client_urls[0]).revision == revision
    assert result.compaction.reason.startswith(f"would compact to revision {revision}")
    assert result.defrag.compacted_to is not None  # the fixture's own compaction
    assert [d.defragment for d in result.defrag.decisions] == [True, True, True]
    assert result.defrag.done == []
    # waiting for each member commits its backend (in use may drop a little), but no member
    # was defragmented
    assert sizes(etcd_churned3) == before
