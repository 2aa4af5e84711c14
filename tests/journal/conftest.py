"""The journal tests' fixture of a history of backups and chains (tests.journal.chains)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from etcdops.stores.configured import open_stores
from tests.backup.two_regions import toml_for, with_s3
from tests.journal.chains import NOW, H, Span, Timeline, backup_at, chains_config, write_chain


@pytest.fixture
def timeline(etcd_single, etcd3_client, age_identity, s3, tmp_path) -> Timeline:
    """Four backups in every store (50 h, 30 h, 23 h and 30 min before NOW), each with its
    chain, a's ending 3 revisions before b, b's reaching 23 h 15 min before NOW; and two chains
    whose base is in no store, an old one and a recent one."""
    config = with_s3(chains_config(etcd_single, age_identity, tmp_path), s3)
    client = etcd3_client(etcd_single.members[0].client_url)
    a, b, c, d = (backup_at(config, client, NOW - hours * H) for hours in (50, 30, 23, 0.5))
    stores = dict(open_stores(config))
    recipient = age_identity.recipient

    def chain(base, first, last, since, step):
        write_chain(stores, config.cluster, base, Span(first, last, since, step), recipient)

    rev = {m.id: m.etcd.revision for m in (a, b, c, d)}
    chain(a.id, rev[a.id] + 1, rev[b.id] - 4, NOW - 50 * H, timedelta(minutes=10))
    chain(b.id, rev[b.id] + 1, rev[c.id], NOW - 30 * H, timedelta(minutes=45))
    chain(c.id, rev[c.id] + 1, rev[d.id], NOW - 23 * H, H)
    chain(d.id, rev[d.id] + 1, rev[d.id] + 10, NOW - 0.5 * H, timedelta(minutes=1))
    old, new = "20261123T000000Z-0000aa", "20261125T100000Z-0000bb"
    chain(old, 5, 9, NOW - 40 * H, timedelta(minutes=10))
    chain(new, 5, 9, NOW - 2 * H, timedelta(minutes=10))
    return Timeline(config, toml_for(config, tmp_path / "etcdops.toml"), a, b, c, d, old, new)
