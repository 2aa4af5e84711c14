from pathlib import Path

import pytest

from etcdops.config import load_config
from etcdops.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etcdops.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.cluster == "default"
    assert config.etcd.endpoints == ("http://127.0.0.1:2379",)
    assert config.etcd.dial_timeout == 5.0
    assert config.source == "defaults"


def test_file_values_are_typed(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    path = write(tmp_path, f"""
cluster = "prod-east"
[etcd]
endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
cacert = "{ca}"
dial_timeout = "2s"
command_timeout = "1m"
[encryption]
recipients = ["age1abc"]
[local]
dir = "{tmp_path}/backups"
compression_level = 5
""")
    config = load_config(path, env={})
    assert config.cluster == "prod-east"
    assert config.etcd.endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert config.etcd.cacert == ca
    assert config.etcd.dial_timeout == 2.0
    assert config.etcd.command_timeout == 60.0
    assert config.local.dir == tmp_path / "backups"
    assert config.local.compression_level == 5
    assert config.source == str(path)


def test_precedence_file_then_etcdctl_then_etcdops_then_flags(tmp_path):
    path = write(tmp_path, '[etcd]\nendpoints = ["http://file:2379"]\nuser = "fileuser"\n')
    env = {"ETCDCTL_ENDPOINTS": "http://a:2379,http://b:2379", "ETCDCTL_USER": "root:s3cret"}
    config = load_config(path, env=env)
    assert config.etcd.endpoints == ("http://a:2379", "http://b:2379")
    assert config.etcd.user == "root"
    assert config.etcd.password == "s3cret"
    assert "s3cret" not in repr(config)
    env["ETCDOPS_ETCD_ENDPOINTS"] = "http://c:2379"
    env["ETCDOPS_CLUSTER"] = "from-env"
    config = load_config(path, env=env)
    assert config.etcd.endpoints == ("http://c:2379",)
    assert config.cluster == "from-env"
    config = load_config(path, env=env, overrides={"cluster": "from-flag", "local.dir": None})
    assert config.cluster == "from-flag"


def test_config_found_through_environment_variable(tmp_path):
    path = write(tmp_path, 'cluster = "via-env"\n')
    assert load_config(env={"ETCDOPS_CONFIG": str(path)}).cluster == "via-env"
    with pytest.raises(ConfigError, match="ETCDOPS_CONFIG"):
        load_config(env={"ETCDOPS_CONFIG": str(tmp_path / "missing.toml")})


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, 'cluster = "a"\n[etcd]\nendpoints = [http://x]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(path) in caught.value.message
    assert "line 3" in caught.value.message


def test_unknown_key_names_key_line_and_valid_keys(tmp_path):
    path = write(tmp_path, 'cluster = "a"\n\n[etcd]\nendpoint = "http://x:2379"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert f"{path}:4" in caught.value.message
    assert "etcd.endpoint" in caught.value.message
    assert "endpoints" in caught.value.hint


def test_unknown_section_is_rejected(tmp_path):
    path = write(tmp_path, '[etc]\nendpoints = ["x"]\n')
    with pytest.raises(ConfigError, match="unknown key 'etc'"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('[etcd]\ndial_timeout = "soon"\n', "etcd.dial_timeout", "duration"),
        ('[etcd]\nendpoints = 5\n', "etcd.endpoints", "list"),
        ('[local]\ncompression_level = "high"\n', "local.compression_level", "whole number"),
        ('cluster = "no/slashes"\n', "cluster", "letters"),
        ('etcd = 3\n', "etcd", "section"),
    ],
)
def test_wrong_types_name_the_key_and_the_fix(tmp_path, text, key, fix):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert key.split(".")[-1] in caught.value.message
    assert fix in (caught.value.hint or "") + caught.value.message


def test_unreadable_tls_file(tmp_path):
    path = write(tmp_path, f'[etcd]\ncacert = "{tmp_path}/nope.crt"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "etcd.cacert" in caught.value.message
    assert "nope.crt" in caught.value.message
    assert f"{path}:2" in caught.value.message


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"\$ETCDOPS_ETCD_DIAL_TIMEOUT"):
        load_config(write(tmp_path, ""), env={"ETCDOPS_ETCD_DIAL_TIMEOUT": "later"})


def test_password_file_is_read_not_logged(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    config = load_config(write(tmp_path, f'[etcd]\npassword_file = "{secret}"\n'), env={})
    assert config.etcd.resolved_password() == "hunter2"
    assert "hunter2" not in repr(config)


def test_s3_sections_and_their_environment_variables(tmp_path):
    path = write(tmp_path, """
[s3]
bucket = "etcd-backups"
region = "us-east-1"
prefix = "prod/"
sse = "aws:kms"
kms_key_id = "alias/etcd"

[s3.replica]
bucket = "etcd-backups-dr"
region = "us-west-2"

[retention]
keep_within = "24h"
keep_min = 5
""")
    config = load_config(path, env={"ETCDOPS_S3_REPLICA_REGION": "eu-west-1"})
    assert config.s3.bucket == "etcd-backups"
    assert config.s3.prefix == "prod/"
    assert config.s3.sse == "aws:kms"
    assert config.s3.replica.bucket == "etcd-backups-dr"
    assert config.s3.replica.region == "eu-west-1"
    assert config.retention.keep_within == 86400
    assert config.retention.keep_min == 5
    assert load_config(write(tmp_path, ""), env={}).s3 is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[s3]\nregion = "us-east-1"\n', "missing required key 's3.bucket'"),
        ('[s3]\nbucket = "b"\n[s3.replica]\nregion = "x"\n', "required key 's3.replica.bucket'"),
        ('[s3]\nbucket = "b"\nsse = "aes"\n', "s3.sse"),
        ('[s3]\nbucket = "b"\nprefix = "/abs"\n', "s3.prefix"),
        ('[s3]\nbucket = "b"\n[s3.replica]\nbucket = "c"\nsse = "none"\n', "s3.replica.sse"),
    ],
)
def test_s3_mistakes_name_the_key(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert needle in caught.value.message
    assert str(path) in caught.value.message
