"""The demo's disaster, what was written after its last backup, and the plan that recovers.

The demo's control plane is lost the way a real one is: its three etcd members die at once
(SIGKILL, no clean shutdown) and their data dirs go with the hosts, as do the backups on the
hosts' own disk; the primary region does not answer either. `dr run` must find the backup in
the replica region, restore every member from it and bring the cluster back, with simulated
kubelets and controllers doing in steps 3-5 what a real cluster does.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdops.demo.sample import compact_json
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession

# the seed's targets: etcd restored in 5 minutes, the whole cluster recovered in 10
RESTORE_TARGET, RECOVERY_TARGET = "5m", "10m"
# the demo's cluster comes back in seconds: a step stuck for a minute is a failure to show
STEP_TIMEOUT = "1m"
MIN_PODS_UPDATED = 0.9


@dataclass(frozen=True)
class Keyspace:
    """How many keys etcd holds and a digest of their names, read in pages (flat memory)."""

    keys: int
    sha256: str


def keyspace(session: EtcdSession) -> Keyspace:
    """The keyspace's size and digest: the same digest means the same set of keys."""
    digest, keys = hashlib.sha256(), 0
    for page in session.key_pages():
        for key in page:  # key order: each key's length first keeps names apart
            digest.update(len(key).to_bytes(4, "big") + key)
            keys += 1
    return Keyspace(keys, digest.hexdigest())


def written_after_backup() -> dict[bytes, bytes]:
    """What the cluster gained after the last backup: a deployment applied by its GitOps
    controller and the ReplicaSet the deployment controller made for it. The restore loses
    them (the data-loss window); the controllers write them again (step 5)."""
    labels = {"app": "web-app"}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:2.0"}]},
    }
    deployment = {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web-app", "namespace": "production", "generation": 1},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": template},
    }
    replica_set = {
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": "web-app-7d4b9c8f6d",
            "namespace": "production",
            "labels": labels,
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-app",
                 "controller": True}
            ],
        },
        "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": template},
    }
    return {
        b"/registry/deployments/production/web-app": compact_json(deployment),
        b"/registry/replicasets/production/web-app-7d4b9c8f6d": compact_json(replica_set),
    }


def destroy(cluster: LocalCluster) -> list[Path]:
    """Kill every member at once (no clean shutdown) and remove its data dir; the dirs gone."""
    for member in cluster.members:
        if member.process is not None and member.process.poll() is None:
            member.process.kill()
    for member in cluster.members:
        if member.process is not None:
            member.process.wait()
    # the demo's own temporary data, standing for disks lost with their hosts
    for member in cluster.members:
        shutil.rmtree(member.data_dir)
    return [member.data_dir for member in cluster.members]


def start_scripts(cluster: LocalCluster) -> list[tuple[Path, Path]]:
    """Write each member's start script (etcd detached, its pid in a file) as an operator's
    `systemctl start etcd`: the plan's start commands run them. (script, pid file) pairs."""
    written = []
    cluster.base_dir.mkdir(parents=True, exist_ok=True)
    for member in cluster.members:
        script = cluster.base_dir / f"{member.name}.start.sh"
        pid_file = cluster.base_dir / f"{member.name}.pid"
        script.write_text(f"#!/bin/sh\n{member.shell_launch(pid_file)}\n")
        script.chmod(0o700)
        written.append((script, pid_file))
    return written


def recovery_plan(
    cluster: LocalCluster, scripts: Sequence[Path], backup_id: str, nodes: int,
    require_keys: Sequence[bytes],
) -> str:
    """The plan `dr run` follows, as TOML with comments: the issue's shape for the demo."""
    lines = [
        "# etcdops demo: recover the demo's three-member cluster",
        f"backup = {_string(backup_id)}",
        "# the local copies went with the hosts and the primary region does not answer:",
        "# 'auto' falls back to the replica region",
        'source = "auto"',
        "",
        "[targets]",
        f"restore = {_string(RESTORE_TARGET)}    # steps 1-2",
        f"recovery = {_string(RECOVERY_TARGET)}  # steps 1-5",
    ]
    for member in cluster.members:
        lines += [
            "",
            "[[members]]",
            f"name = {_string(member.name)}",
            f"peer_url = {_string(member.peer_url)}",
            f"client_url = {_string(member.client_url)}",
            f"data_dir = {_string(str(member.data_dir))}",
            'exec = ""  # on this host',
        ]
    starts = [f"    {_string(f'sh {shlex.quote(str(script))}')}," for script in scripts]
    timeout = _string(STEP_TIMEOUT)
    keys = ", ".join(_string(key.decode()) for key in require_keys)
    lines += [
        "",
        "[steps.stop]",
        "commands = []  # etcd is already dead and nothing else writes to it",
        "",
        "[steps.restore]",
        f"timeout = {timeout}",
        "",
        "[steps.start]",
        "# each member's script starts it in the background, its pid in a file",
        "commands = [",
        *starts,
        "]",
        f"timeout = {timeout}",
        "",
        "[steps.nodes]",
        f"expect = {nodes}  # every node's kubelet renews its lease",
        f"timeout = {timeout}",
        "",
        "[steps.pods]",
        f"min_updated = {MIN_PODS_UPDATED}",
        f"timeout = {timeout}",
        "",
        "[steps.controllers]",
        "# written after the backup, lost with it, and put back by their controllers",
        f"require_keys = [{keys}]",
        f"timeout = {timeout}",
    ]
    return "\n".join(lines) + "\n"


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's."""
    return json.dumps(text)
