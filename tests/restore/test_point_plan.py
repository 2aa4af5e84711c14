"""plan_point's choice of base for --at, on real backups and real sealed segments at chosen
times (tests.journal.chains): a moment just after a new backup, before the journal switched
to it, is restored from the chain it switched from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from etcdops.report import LogReporter
from etcdops.restore.point_plan import PointTarget, plan_point
from etcdops.stores.configured import open_stores
from tests.journal.chains import Span, backup_at, chains_config, write_chain

NOW = datetime.now(UTC).replace(microsecond=0)


def test_a_moment_before_the_journal_switched_to_a_new_backup_comes_from_the_old_chain(
    etcd_single, etcd3_client, age_identity, tmp_path
):
    config = chains_config(etcd_single, age_identity, tmp_path)
    client = etcd3_client(etcd_single.members[0].client_url)
    old = backup_at(config, client, NOW - timedelta(hours=2))
    hourly = backup_at(config, client, NOW - timedelta(hours=1))
    stores = dict(open_stores(config))
    recipient = age_identity.recipient
    first, taken = old.etcd.revision + 1, hourly.etcd.revision
    # the old chain holds the revisions after the hourly backup with the moments they came...
    write_chain(stores, config.cluster, old.id,
                Span(first, taken, NOW - timedelta(hours=2), timedelta(minutes=1)), recipient)
    write_chain(stores, config.cluster, old.id,
                Span(taken + 1, taken + 20, hourly.created_at + timedelta(seconds=1),
                     timedelta(seconds=1)), recipient)
    # ...and the new chain, begun at the switch a minute later, re-read them then
    write_chain(stores, config.cluster, hourly.id,
                Span(taken + 1, taken + 30, hourly.created_at + timedelta(seconds=60),
                     timedelta(milliseconds=100)), recipient)
    at = hourly.created_at + timedelta(seconds=30)
    plan = plan_point(config, PointTarget(at=at), open_stores(config), LogReporter())
    assert plan.base.id == old.id
    assert plan.revision == taken + 20  # every revision the old chain saw by then
    assert plan.seen[1] <= at
    # a moment after the switch comes from the new base, as ever
    later = plan_point(config, PointTarget(at=hourly.created_at + timedelta(seconds=70)),
                       open_stores(config), LogReporter())
    assert later.base.id == hourly.id and later.revision == taken + 30
