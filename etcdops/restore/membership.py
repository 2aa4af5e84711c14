"""The restored member's place in its new cluster: name, peer URLs, --initial-cluster, token.

etcdutl derives the member and cluster ids from these, so every member of one recovery needs
the same --initial-cluster and token, and its own name and peer URLs. They are checked here,
before anything is downloaded, so that a typo costs nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from etcdops.errors import UsageError


@dataclass(frozen=True)
class Membership:
    name: str
    peer_urls: tuple[str, ...]
    initial_cluster: str  # as etcdutl gets it: entries without surrounding blanks
    members: tuple[str, ...]  # every member's name, in --initial-cluster's order
    token: str
    token_generated: bool

    def etcdutl_flags(self) -> list[str]:
        """The flags of `etcdutl snapshot restore` that place this member."""
        return [
            "--name", self.name,
            "--initial-cluster", self.initial_cluster,
            "--initial-advertise-peer-urls", ",".join(self.peer_urls),
            "--initial-cluster-token", self.token,
        ]


def membership(
    name: str, initial_cluster: str, peer_urls: str, token: str | None, cluster: str
) -> Membership:
    """Check the flags against each other; a new token (named after the cluster) if none."""
    if not name.strip():
        raise UsageError("--name is empty", "give the member's name, as in --initial-cluster")
    entries = _entries(initial_cluster)
    own = tuple(_url(u.strip(), "--initial-advertise-peer-urls") for u in peer_urls.split(","))
    listed = [url for member, url in entries if member == name]
    if not listed:
        names = ", ".join(dict.fromkeys(member for member, _ in entries))
        raise UsageError(
            f"--initial-cluster has no member named {name!r} (it names {names})",
            f"add {name}=<peer URL> to --initial-cluster, or fix --name",
        )
    if set(listed) != set(own):
        raise UsageError(
            f"--initial-cluster gives {name} the peer URLs {','.join(listed)}, "
            f"--initial-advertise-peer-urls says {','.join(own)}",
            "give the member the same peer URLs in both",
        )
    owners: dict[str, str] = {}
    for member, url in entries:
        if owners.setdefault(url, member) != member:
            raise UsageError(
                f"--initial-cluster gives the peer URL {url} to both {owners[url]} and {member}",
                "each member needs peer URLs of its own",
            )
    if token is not None and not token.strip():
        raise UsageError("--initial-cluster-token is empty", "give the recovery's token, or "
                         "leave the option out for a new one")
    return Membership(
        name=name,
        peer_urls=own,
        initial_cluster=",".join(f"{member}={url}" for member, url in entries),
        members=tuple(dict.fromkeys(member for member, _ in entries)),
        token=token or f"{cluster}-restore-{secrets.token_hex(4)}",
        token_generated=token is None,
    )


def _entries(initial_cluster: str) -> list[tuple[str, str]]:
    entries = []
    for entry in (e.strip() for e in initial_cluster.split(",")):
        member, sep, url = entry.partition("=")
        if not sep or not member.strip():
            raise UsageError(
                f"--initial-cluster entry {entry!r} is not name=peer-URL",
                "write it as etcd takes it: cp-1=https://10.0.1.11:2380,cp-2=https://...",
            )
        entries.append((member.strip(), _url(url.strip(), f"--initial-cluster ({member})")))
    return entries


def _url(url: str, where: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise UsageError(
            f"{where}: {url!r} is not a peer URL",
            "write it as http(s)://host:port, e.g. https://10.0.1.11:2380",
        )
    return url
