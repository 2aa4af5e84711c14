"""The member flags are checked against each other before anything is downloaded."""

import pytest

from etcdops.errors import UsageError
from etcdops.restore.membership import membership

CLUSTER = "cp-1=https://10.0.1.11:2380,cp-2=https://10.0.1.12:2380,cp-3=https://10.0.1.13:2380"


def test_flags_for_etcdutl_and_a_new_token_named_after_the_cluster():
    member = membership("cp-2", CLUSTER, "https://10.0.1.12:2380", None, "prod-east")
    assert member.token_generated and member.token.startswith("prod-east-restore-")
    assert member.members == ("cp-1", "cp-2", "cp-3")
    assert member.etcdutl_flags() == [
        "--name", "cp-2", "--initial-cluster", CLUSTER,
        "--initial-advertise-peer-urls", "https://10.0.1.12:2380",
        "--initial-cluster-token", member.token,
    ]
    # each recovery gets a token of its own
    assert membership("cp-2", CLUSTER, "https://10.0.1.12:2380", None, "prod-east").token != (
        member.token
    )


def test_a_given_token_is_kept_and_blanks_around_entries_are_dropped():
    spaced = CLUSTER.replace(",", ", ")
    member = membership("cp-1", spaced, "https://10.0.1.11:2380", "recovery-7", "c")
    assert (member.token, member.token_generated) == ("recovery-7", False)
    assert member.initial_cluster == CLUSTER


def test_a_member_with_two_peer_urls():
    cluster = "a=http://10.0.0.1:2380,a=http://10.0.1.1:2380,b=http://10.0.0.2:2380"
    member = membership("a", cluster, "http://10.0.1.1:2380,http://10.0.0.1:2380", None, "c")
    assert member.peer_urls == ("http://10.0.1.1:2380", "http://10.0.0.1:2380")
    assert member.members == ("a", "b")


@pytest.mark.parametrize(("name", "cluster", "peers", "token", "message"), [
    ("cp-4", CLUSTER, "https://10.0.1.14:2380", None,
     "--initial-cluster has no member named 'cp-4' (it names cp-1, cp-2, cp-3)"),
    ("cp-1", CLUSTER, "https://10.0.1.99:2380", None,
     "--initial-cluster gives cp-1 the peer URLs https://10.0.1.11:2380, "
     "--initial-advertise-peer-urls says https://10.0.1.99:2380"),
    ("cp-1", "cp-1=https://10.0.1.11:2380,cp-2", "https://10.0.1.11:2380", None,
     "--initial-cluster entry 'cp-2' is not name=peer-URL"),
    ("cp-1", "cp-1=10.0.1.11:2380", "10.0.1.11:2380", None,
     "--initial-cluster (cp-1): '10.0.1.11:2380' is not a peer URL"),
    ("cp-1", "cp-1=https://10.0.1.11", "https://10.0.1.11", None, "is not a peer URL"),
    ("cp-1", "cp-1=http://a:1,cp-2=http://a:1", "http://a:1", None,
     "gives the peer URL http://a:1 to both cp-1 and cp-2"),
    ("", CLUSTER, "https://10.0.1.11:2380", None, "--name is empty"),
    ("cp-1", CLUSTER, "https://10.0.1.11:2380", " ", "--initial-cluster-token is empty"),
])
def test_flags_that_cannot_work_are_usage_errors(name, cluster, peers, token, message):
    with pytest.raises(UsageError) as caught:
        membership(name, cluster, peers, token, "c")
    assert message in caught.value.message
    assert caught.value.hint
