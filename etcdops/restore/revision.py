"""What a restore does about etcd's revision, which goes back to the snapshot's.

Kubernetes clients keep resourceVersions (etcd revisions) across a control-plane outage: the
kube-apiserver's watch cache, controllers, kubelets, kube-proxy. After a restore the revision is
the snapshot's, below what they saw, so a watch resumed from a later revision waits for changes
that already happened under other numbers and caches serve stale objects. etcdutl 3.5.10+ and
3.6 move the revision past anything seen (`--bump-revision N --mark-compacted`: a watch from
an old revision is then told it was compacted, and its client lists afresh). Without them the
components that watch must be restarted. A later way (a staging etcd that advances the
revision before the members are restored from it) will be one more kind of plan here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etcdops.config.settings import RestoreConfig
from etcdops.etcd.binaries import etcdutl_supports

BUMP_FLAGS = ("--bump-revision", "--mark-compacted")  # each requires the other
# every component that holds watches or resourceVersions across the outage
RESTART = (
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "every kubelet",
    "every kube-proxy",
)


@dataclass(frozen=True)
class RevisionPlan:
    """How this restore leaves the revision: bumped by etcdutl, or not (and what to restart)."""

    method: str  # "etcdutl --bump-revision --mark-compacted" or "none"
    bump: int  # what is added to the snapshot's revision; 0 when not bumped
    flags: tuple[str, ...]  # for `etcdutl snapshot restore`
    warning: str | None  # what the operator must do because the revision went backwards

    def revision_after(self, snapshot_revision: int | None) -> int | None:
        """The revision the restored member starts from."""
        return None if snapshot_revision is None else snapshot_revision + self.bump

    def as_dict(self, snapshot_revision: int | None) -> dict[str, object]:
        """The JSON form, with the revisions before and after the restore."""
        return {
            "method": self.method,
            "bump": self.bump,
            "snapshot": snapshot_revision,
            "after_restore": self.revision_after(snapshot_revision),
            "restart": [] if self.warning is None else list(RESTART),
        }


def plan_revision(etcdutl: Path, settings: RestoreConfig) -> RevisionPlan:
    """Bump when this etcdutl's `snapshot restore --help` offers both flags (its help, not its
    version string: distributions backport, and builds report odd versions)."""
    if all(etcdutl_supports(etcdutl, flag) for flag in BUMP_FLAGS):
        bump = settings.bump_revision
        return RevisionPlan(
            "etcdutl --bump-revision --mark-compacted", bump,
            ("--bump-revision", str(bump), "--mark-compacted"), None,
        )
    return RevisionPlan("none", 0, (), restart_warning(etcdutl))


def restart_warning(etcdutl: Path) -> str:
    """The one line that says which components to restart, and why."""
    return (
        f"the revision went back to the snapshot's: {etcdutl} has no --bump-revision "
        "(etcd 3.5.10+ and 3.6 have it); once etcd is up, restart "
        f"{', '.join(RESTART[:-1])} and {RESTART[-1]}, or their watches and caches keep "
        "resourceVersions from before the restore"
    )
