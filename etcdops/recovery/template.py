"""`dr plan`: a commented plan to edit, written from the configuration and the live cluster.

The members come from etcd's member list (names, peer and client URLs) and step 3's expected
node count from the node leases there; when etcd does not answer (the disaster already
happened) they are guessed from [etcd] endpoints, and a warning says so. Every key is explained
in the file; it parses as it is written (tests load it back), except when no node lease was
counted: then step 3's expect is written as 0, which the plan's reader refuses until it is set.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from etcdops.config import Config
from etcdops.errors import EtcdopsError, UsageError
from etcdops.recovery.steps import NODE_LEASES
from etcdops.stores.local import AtomicFile

DATA_DIR = "/var/lib/etcd"
_PEER_PORT = 2380


@dataclass(frozen=True)
class TemplateMember:
    name: str
    peer_url: str
    client_url: str


@dataclass(frozen=True)
class PlanTemplate:
    """What `dr plan` wrote, and from what."""

    path: Path
    members: tuple[TemplateMember, ...]
    members_from: str  # the member list, or the configured endpoints
    node_leases: int | None  # counted in the live cluster; None when it did not answer
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """The JSON form of what was written."""
        return {
            "plan": str(self.path),
            "members": [vars(member) for member in self.members],
            "members_from": self.members_from,
            "node_leases": self.node_leases,
            "warnings": list(self.warnings),
        }


def write_plan_template(config: Config, path: Path, *, force: bool = False) -> PlanTemplate:
    """Write a commented plan for this cluster to path; never over a file without force."""
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(
            f"{path} already exists (nothing was written)",
            "pass --force to overwrite it, or choose another --plan path",
        )
    members, node_leases, members_from, warnings = _cluster(config, path)
    if not node_leases:
        warnings += (f"no node lease was counted: set [steps.nodes] expect in {path} to the "
                     "number of nodes (or give it a command); as written, 0 is refused",)
    text = plan_text(config, members, node_leases, members_from)
    with AtomicFile(path, mode=0o644) as target:
        target.write(text.encode())
    return PlanTemplate(path, members, members_from, node_leases, warnings)


def _cluster(
    config: Config, path: Path
) -> tuple[tuple[TemplateMember, ...], int | None, str, tuple[str, ...]]:
    """The members and node count of the live cluster, else guesses from the endpoints."""
    from etcdops.etcd.session import EtcdSession

    try:
        with EtcdSession(config.etcd) as session:
            # by name: the member list's order (by id) means nothing to an operator
            listed = sorted((m for m in session.members() if not m.is_learner),
                            key=lambda m: m.name)
            leases = sum(len(page) for page in session.key_revisions(NODE_LEASES))
    except EtcdopsError as exc:
        guessed = tuple(_guess(index, endpoint) for index, endpoint in
                        enumerate(config.etcd.endpoints, start=1))
        return guessed, None, "[etcd] endpoints", (
            f"etcd did not answer ({exc.message}): the members in {path} are guessed from "
            "[etcd] endpoints (names member-N, peer URLs on port 2380); check each name and "
            "peer_url against etcd's own flags, and step 3's expect",
        )
    members = tuple(
        TemplateMember(
            member.name or f"member-{member.id:x}",
            member.peer_urls[0] if member.peer_urls else "",
            member.client_urls[0] if member.client_urls else "",
        )
        for member in listed
    )
    return members, leases, "etcd's member list", ()


def _guess(index: int, endpoint: str) -> TemplateMember:
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    parts = urlsplit(url)
    return TemplateMember(
        f"member-{index}", f"{parts.scheme}://{parts.hostname}:{_PEER_PORT}", url
    )


def _placement(members: tuple[TemplateMember, ...]) -> list[tuple[str, str]]:
    """Each member's exec prefix and data dir, guessed: "" for a peer URL on this host, else
    `ssh root@HOST`; /var/lib/etcd, or /var/lib/etcd-NAME where one host runs several members
    (a plan with two members on one data dir is refused)."""
    local = _local_names()
    prefixes = []
    for member in members:
        host = urlsplit(member.peer_url).hostname or ""
        prefixes.append("" if host.lower() in local else f"ssh root@{host}")
    return [
        (prefix, DATA_DIR if prefixes.count(prefix) == 1 else _own_data_dir(member.name))
        for member, prefix in zip(members, prefixes, strict=True)
    ]


def _own_data_dir(name: str) -> str:
    return f"/var/lib/{name}" if name.startswith("etcd") else f"{DATA_DIR}-{name}"


def _local_names() -> set[str]:
    """The names and addresses this host answers to."""
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname().lower(),
             socket.getfqdn().lower()}
    # a host whose own name does not resolve has its loopback names only
    with contextlib.suppress(OSError):
        names |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    return names


def _duration(seconds: float) -> str:
    """A duration as a plan writes it: "5m", "90s"."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def plan_text(
    config: Config, members: tuple[TemplateMember, ...], node_leases: int | None,
    members_from: str,
) -> str:
    """The plan template itself."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    dr = config.dr
    lines = [
        f"# Disaster-recovery plan for etcd cluster {_q(config.cluster)}, written by",
        f"# `etcdops dr plan` on {now} from {members_from}.",
        "#",
        "# `etcdops dr run --plan THIS --dry-run` checks every prerequisite and changes nothing;",
        "# `etcdops dr run --plan THIS` runs the stop step, then the five steps of the runbook:",
        "# 1 restore etcd from the backup, 2 start the control plane, 3 nodes reconnect,",
        "# 4 kubelets reconcile pod state, 5 controllers recreate missing resources.",
        "# An interrupted run resumes where it stopped (THIS.state.json beside this file);",
        "# durations are written \"90s\", \"5m\", \"1h\".",
        "",
        "# The backup to restore: \"latest\" (the newest complete one) or a backup id (or a",
        "# unique prefix of one). A resumed run keeps the backup its first attempt chose.",
        'backup = "latest"',
        "# With the journal (`etcdops journal run`), \"latest\" is the newest journaled point;",
        "# or restore the cluster as it was at a moment or an etcd revision (one of the two;",
        "# dr run --at / --revision override them): the newest backup before it, and the",
        "# journal replayed on a staging etcd on this host up to it.",
        '# at = "2026-11-25T09:13:00Z"',
        "# revision = 123456",
        "# A hole in the journal refuses the run, naming the last provable revision; true",
        "# restores to that revision instead, with a warning (dr run --allow-gap).",
        "# allow_gap = false",
        "# Where to read it from: auto (local, then primary, then replica, falling back when",
        "# a copy is unreachable or fails its checks), or only one of local | primary | replica.",
        'source = "auto"',
        "",
        "[targets]",
        "# restore time: steps 1-2, until etcd serves again (default [dr] restore_target)",
        f"restore = {_q(_duration(dr.restore_target))}",
        "# recovery time: steps 1-5 (default [dr] recovery_target); a missed target never",
        "# stops a recovery: it finishes, and then exits 16",
        f"recovery = {_q(_duration(dr.recovery_target))}",
        "",
        "# One [[members]] table per member of the restored cluster. Every member is restored",
        "# from the same snapshot with the same --initial-cluster (built from these tables) and",
        "# one new cluster token.",
    ]
    for member, (prefix, data_dir) in zip(members, _placement(members), strict=True):
        lines += [
            "[[members]]",
            f"name = {_q(member.name)}",
            f"peer_url = {_q(member.peer_url)}        # its --initial-advertise-peer-urls",
            f"client_url = {_q(member.client_url)}      # step 2 checks it here ([etcd] TLS, auth)",
            "# etcd's --data-dir on that host: one that is there is moved aside as",
            "# DIR.etcdops-<UTC time>, never deleted",
            f"data_dir = {_q(data_dir)}",
            "# \"\" when the member runs on this host; for another host, the command prefix",
            "# that runs a command there, e.g. \"ssh root@<host>\" (the snapshot is streamed to",
            "# `etcdops restore -` there; etcdops must be installed on that host). Guessed",
            "# from the peer URL's host: check it.",
            f"exec = {_q(prefix)}",
            "# etcdops = \"etcdops\"   # etcdops on that host, as the prefix runs it",
            "",
        ]
    expect = node_leases if node_leases is not None else 0
    lines += [
        "# Before step 1: stop what writes to etcd or holds its data dirs, on every host. Each",
        "# command runs with `sh -c` on this host and must exit 0; reach other hosts with ssh",
        "# (a host that is gone fails its command: add `|| true` where that is fine).",
        "[steps.stop]",
        'commands = ["systemctl stop kubelet", "systemctl stop etcd"]',
        "# e.g. \"ssh root@cp-2 systemctl stop kubelet etcd\"",
        'timeout = "3m"',
        "",
        "# Step 1: download, check and decode the backup once, restore every member from it.",
        "[steps.restore]",
        'timeout = "30m"',
        "",
        "# Step 2: start etcd and the control plane; then every member must answer, agree on",
        "# one leader, and serve reads at the restored revision. A run resumed at step 2 runs",
        "# these again: they must do no harm twice (systemctl start does none).",
        "[steps.start]",
        'commands = ["systemctl start etcd", "systemctl start kubelet"]',
        'timeout = "3m"',
        "",
        "# Step 3: nodes reconnect: this many node leases under /registry/leases/kube-node-lease/",
        "# renewed after the restore"
        + (f" ({expect} in the cluster when this was written)," if expect
           else " (SET IT to the number of nodes: 0 checks nothing and is refused),"),
        "# and/or a command that exits 0 once they have.",
        "[steps.nodes]",
        f"expect = {expect}",
        "# command = \"kubectl wait --for=condition=Ready nodes --all --timeout=2m\"",
        'timeout = "3m"',
        "",
        "# Step 4: kubelets reconcile pod state: the fraction of the restored pods under",
        "# /registry/pods/ updated after the restore, and/or a command.",
        "[steps.pods]",
        "min_updated = 0.9",
        'timeout = "3m"',
        "",
        "# Step 5: controllers recreate missing resources: keys that must exist again (objects",
        "# created after the backup), and/or a command.",
        "[steps.controllers]",
        'require_keys = ["/registry/namespaces/default"]',
        "# command = \"kubectl rollout status deployment --all -A --timeout=2m\"",
        'timeout = "3m"',
        "",
        "# The files the backup carries besides etcd's data ([backup] include_files: the",
        "# kube-apiserver's EncryptionConfiguration, etcd's PKI) go back under `to` on this host",
        "# during step 1 (\"/\": each at its own path); an existing file stops the step unless",
        "# force = true, which moves it aside. Other hosts' copies are not written.",
        "[files]",
        *(['to = "/"'] if config.backup.include_files else ['# to = "/"']),
        "force = false",
        "",
    ]
    return "\n".join(lines)
