"""etcd's Cluster service: the member list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etcdops.etcd.connection import Connections
from etcdops.etcd.rpc import import_etcdrpc, last, newer_fields

# etcd 3.5's Member fields that the stubs predate (numbers as in rpc.proto)
_MEMBER_V35 = {"isLearner": 5}


@dataclass(frozen=True)
class Member:
    """One entry of the cluster's member list."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


class ClusterCalls(Connections):
    """The Cluster calls etcdops makes."""

    def members(self) -> list[Member]:
        """The cluster's member list, from the first endpoint that answers."""
        etcdrpc = import_etcdrpc()

        def call(url: str) -> Any:
            request = etcdrpc.MemberListRequest()
            return self._unary(url, "Cluster", "MemberList", request, "MemberList")

        response = self._first_answer("MemberList", call)
        return [
            Member(
                id=member.ID,
                name=member.name,
                peer_urls=tuple(member.peerURLs),
                client_urls=tuple(member.clientURLs),
                is_learner=bool(last(newer_fields(member, _MEMBER_V35)["isLearner"])),
            )
            for member in response.members
        ]
