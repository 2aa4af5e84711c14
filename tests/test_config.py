import dataclasses
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.cli.main import app
from etcdops.config import (
    CompactionConfig,
    Config,
    DefragConfig,
    EncryptionConfig,
    EtcdConfig,
    HealthConfig,
    LocalConfig,
    RetentionConfig,
    S3Config,
    S3Location,
    load_config,
)
from etcdops.config.settings import SECTIONS
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


@pytest.mark.parametrize(
    ("text", "env", "key", "origin_line", "valid"),
    [
        ("[local]\ncompression_level = 99\n", {}, "local.compression_level", 2, "1 to 22"),
        ("[local]\ncompression_level = 0\n", {}, "local.compression_level", 2, "1 to 22"),
        ('[etcd]\ndial_timeout = "99999999999h"\n', {}, "etcd.dial_timeout", 2, "10ms to 10m"),
        ("[etcd]\ndial_timeout = inf\n", {}, "etcd.dial_timeout", 2, "10ms to 10m"),
        ("[etcd]\ndial_timeout = nan\n", {}, "etcd.dial_timeout", 2, "10ms to 10m"),
        ('[etcd]\ncommand_timeout = "0s"\n', {}, "etcd.command_timeout", 2, "10ms to 1h"),
        ('[s3]\nbucket = "b"\npart_size = "1TB"\n', {}, "s3.part_size", 3, "5MiB to 5GiB"),
        ('[s3]\nbucket = "b"\npart_size = "1MiB"\n', {}, "s3.part_size", 3, "5MiB to 5GiB"),
        ('[s3]\nbucket = "b"\n', {"ETCDOPS_S3_PART_SIZE": "9" * 400}, "s3.part_size",
         "$ETCDOPS_S3_PART_SIZE", "5MiB to 5GiB"),
        ('[s3]\nbucket = "b"\nupload_concurrency = 0\n', {}, "s3.upload_concurrency", 3,
         "1 to 64"),
        ('[s3]\nbucket = "b"\nmax_attempts = 0\n', {}, "s3.max_attempts", 3, "1 to 20"),
        ('[s3]\nbucket = "b"\n[s3.replica]\nbucket = "c"\nread_timeout = "0s"\n', {},
         "s3.replica.read_timeout", 5, "10ms to 1h"),
        ('[s3]\nbucket = "b"\ndeadline = "99999d"\n', {}, "s3.deadline", 3, "1s to 7d"),
        ("[retention]\nkeep_min = -1\n", {}, "retention.keep_min", 2, "1 or more"),
        ("[retention]\nkeep_min = 0\n", {}, "retention.keep_min", 2, "1 or more"),
        ('[retention]\nkeep_within = "0s"\n', {}, "retention.keep_within", 2, "1h to 3650d"),
        ("", {"ETCDOPS_DEFRAG_QUOTA_PERCENT": "101"}, "defrag.quota_percent",
         "$ETCDOPS_DEFRAG_QUOTA_PERCENT", "1 to 100"),
        ("[health]\ndb_size_percent = 0\n", {}, "health.db_size_percent", 2, "1 to 100"),
        ('[health]\ncompaction_p99 = "0s"\n', {}, "health.compaction_p99", 2, "1ms to 1h"),
        ('[compaction]\nretain = "31d"\n', {}, "compaction.retain", 2, "0s to 30d"),
        ('[etcd]\nquota_backend_bytes = "2PiB"\n', {}, "etcd.quota_backend_bytes", 2,
         "1MiB to 1TiB"),
    ],
)
def test_numbers_outside_their_range_name_key_origin_and_range(
    tmp_path, text, env, key, origin_line, valid
):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    where = origin_line if isinstance(origin_line, str) else f"{path}:{origin_line}"
    assert caught.value.message.startswith(f"{where}: "), caught.value.message
    assert f"'{key}'" in caught.value.message
    assert valid in caught.value.hint


def _fields_of(cls):
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("kind") == "section":
            yield from _fields_of(spec.metadata["cls"])
        elif spec.metadata.get("kind") is not None:
            yield cls, spec
        elif dataclasses.is_dataclass(spec.type if isinstance(spec.type, type) else None):
            yield from _fields_of(spec.type)


def test_every_number_declares_its_range_and_its_default_is_inside():
    classes = [Config, EtcdConfig, EncryptionConfig, LocalConfig, S3Config, RetentionConfig,
               CompactionConfig, DefragConfig, HealthConfig]
    numeric = [(c, f) for cls in classes for c, f in _fields_of(cls)
               if f.metadata["kind"] in ("int", "duration", "size")]
    assert len(numeric) >= 25
    for cls, spec in numeric:
        low, high = spec.metadata["range"]
        assert low is not None, f"{cls.__name__}.{spec.name} has no lower bound"
        if spec.default is not None:
            assert low <= spec.default and (high is None or spec.default <= high), spec.name


def test_the_limits_are_the_ones_the_libraries_and_s3_keep():
    import zstandard

    level = LocalConfig.__dataclass_fields__["compression_level"].metadata["range"]
    assert level == (1, zstandard.MAX_COMPRESSION_LEVEL)
    assert S3Location.__dataclass_fields__["part_size"].metadata["range"] == (5 * 2**20, 5 * 2**30)


def test_an_unknown_etcdops_variable_warns_with_the_nearest_setting(tmp_path):
    env = {"ETCDOPS_RETENTON_KEEP_MIN": "1", "ETCDOPS_CONFIG": str(write(tmp_path, "")),
           "ETCDOPS_S3REPLICA_BUCKET": "x", "ETCDOPS_ETCD_ENDPOINTS": "http://a:2379"}
    config = load_config(env=env)
    assert config.retention.keep_min == 3
    assert config.warnings == (
        "$ETCDOPS_RETENTON_KEEP_MIN is not a setting; did you mean ETCDOPS_RETENTION_KEEP_MIN?",
        "$ETCDOPS_S3REPLICA_BUCKET is not a setting; did you mean ETCDOPS_S3_REPLICA_BUCKET?",
    )
    assert load_config(env={"ETCDOPS_CONFIG": env["ETCDOPS_CONFIG"]}).warnings == ()


def test_an_unknown_key_of_a_known_section_names_the_nearest_one(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), env={"ETCDOPS_RETENTION_KEEP_MN": "1"})
    assert caught.value.message.startswith("$ETCDOPS_RETENTION_KEEP_MN: unknown key")
    assert "did you mean ETCDOPS_RETENTION_KEEP_MIN?" in caught.value.hint


def test_the_replica_inherits_what_it_does_not_set_except_bucket_region_and_kms_key(tmp_path):
    path = write(tmp_path, """
[s3]
bucket = "primary"
region = "eu-central-1"
endpoint_url = "https://minio.example:9000"
prefix = "etcd/"
sse = "aws:kms"
kms_key_id = "alias/primary"
storage_class = "STANDARD_IA"
part_size = "64MiB"
read_timeout = "2m"

[s3.replica]
bucket = "dr"
region = "eu-west-1"
part_size = "16MiB"
""")
    replica = load_config(path, env={}).s3.replica
    assert replica.bucket == "dr" and replica.region == "eu-west-1"
    assert replica.endpoint_url == "https://minio.example:9000"
    assert replica.prefix == "etcd/"
    assert replica.sse == "aws:kms" and replica.kms_key_id is None  # KMS keys are regional
    assert replica.storage_class == "STANDARD_IA"
    assert replica.part_size == 16 * 2**20  # its own setting wins
    assert replica.read_timeout == 120
    unset = load_config(write(tmp_path, '[s3]\nbucket = "p"\nregion = "us-east-1"\n'
                              '[s3.replica]\nbucket = "dr"\n'), env={})
    assert unset.s3.replica.region is None  # the AWS chain's, never silently the primary's
    from_env = load_config(path, env={"ETCDOPS_S3_REPLICA_PREFIX": "dr/",
                                      "ETCDOPS_S3_ENDPOINT_URL": "https://other.example"})
    assert from_env.s3.replica.prefix == "dr/"
    assert from_env.s3.replica.endpoint_url == "https://other.example"
    only_env = load_config(write(tmp_path, '[s3]\nbucket = "p"\nprefix = "x/"\n'),
                           env={"ETCDOPS_S3_REPLICA_BUCKET": "dr"})
    assert only_env.s3.replica.bucket == "dr" and only_env.s3.replica.prefix == "x/"


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('[s3]\nbucket = "b"\nendpoint_url = "http://127.0.0.1:9000"\n[s3.replica]\nbucket = "b"\n',
         {}),
        ('[s3]\nbucket = "b"\nendpoint_url = "http://127.0.0.1:9000"\n[s3.replica]\nbucket = "b"\n'
         'endpoint_url = "HTTP://127.0.0.1:9000/"\nprefix = "dr/"\n', {}),
        ('[s3]\nbucket = "b"\nregion = "us-east-1"\n[s3.replica]\nbucket = "b"\n'
         'region = "us-east-1"\n', {}),
        # AWS bucket names are global: the same name is the same bucket whatever the region
        ('[s3]\nbucket = "b"\nregion = "us-east-1"\n[s3.replica]\nbucket = "b"\n'
         'region = "us-west-2"\n', {}),
        ('[s3]\nbucket = "b"\n[s3.replica]\nbucket = "b"\n'
         'endpoint_url = "https://s3.us-west-2.amazonaws.com"\n', {}),
        ('[s3]\nbucket = "b"\n', {"ETCDOPS_S3_REPLICA_BUCKET": "b"}),
    ],
)
def test_a_replica_that_is_the_primary_bucket_is_refused(tmp_path, text, env):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert "s3.replica" in caught.value.message
    assert "primary" in caught.value.message
    assert "bucket" in caught.value.hint


def test_a_replica_in_another_bucket_or_on_another_endpoint_is_accepted(tmp_path):
    for text in [
        '[s3]\nbucket = "b"\nendpoint_url = "http://a:9000"\n[s3.replica]\nbucket = "b"\n'
        'endpoint_url = "http://b:9000"\n',
        '[s3]\nbucket = "b"\nregion = "us-east-1"\n[s3.replica]\nbucket = "c"\n'
        'region = "us-east-1"\n',
    ]:
        assert load_config(write(tmp_path, text), env={}).s3.replica is not None


def test_a_bad_number_exits_10_in_one_line_before_any_work(tmp_path):
    backups = tmp_path / "backups"
    path = write(tmp_path, '[etcd]\nendpoints = ["http://127.0.0.1:9"]\n'
                 f'[local]\ndir = "{backups}"\ncompression_level = 99\n')
    result = CliRunner().invoke(app, ["snapshot", "save", "--local-only", "--config", str(path)])
    assert result.exit_code == 10, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:5: ") and "local.compression_level" in line
    assert "1 to 22" in line and "127.0.0.1:9" not in line
    assert not backups.exists()


def test_the_cli_prints_config_warnings_once(tmp_path):
    path = write(tmp_path, f'[local]\ndir = "{tmp_path}/backups"\n')
    result = CliRunner().invoke(app, ["snapshot", "list", "--config", str(path)],
                                env={"ETCDOPS_RETENTON_KEEP_MIN": "1"})
    assert result.exit_code == 0, result.output
    assert result.stderr.count("did you mean ETCDOPS_RETENTION_KEEP_MIN?") == 1
    assert result.stderr.startswith("warning: $ETCDOPS_RETENTON_KEEP_MIN is not a setting")


def test_a_replica_in_the_primary_aws_region_is_a_warning(tmp_path):
    same = load_config(write(tmp_path, '[s3]\nbucket = "b"\nregion = "us-east-1"\n'
                             '[s3.replica]\nbucket = "c"\nregion = "us-east-1"\n'), env={})
    assert same.warnings == ("s3.replica ('c') is in the primary's region, us-east-1: it does "
                             "not survive a region outage; set [s3.replica] region",)
    other = load_config(write(tmp_path, '[s3]\nbucket = "b"\nregion = "us-east-1"\n'
                              '[s3.replica]\nbucket = "c"\nregion = "us-west-2"\n'), env={})
    assert other.warnings == ()
    compatible = load_config(write(tmp_path, '[s3]\nbucket = "b"\nendpoint_url = "http://a:1"\n'
                                   '[s3.replica]\nbucket = "c"\n'), env={})
    assert compatible.warnings == ()  # S3-compatible regions are often names without a place


def test_the_readme_lists_every_range_as_the_code_declares_it():
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("| key | valid |"):]
    table = table[:table.index("\n\n")]  # other two-column tables (the log formats) are not it
    rows = re.findall(r"^\| (`[^|]+`) \| ([^|(]+?)(?: \(.*\))? \|$", table, re.MULTILINE)
    documented = {key.strip("`"): valid for keys, valid in rows for key in keys.split(", ")}
    declared = {}
    for section, cls in SECTIONS.items():
        for spec in dataclasses.fields(cls):
            if "range_text" in spec.metadata:
                declared[f"{section}.{spec.name}"] = spec.metadata["range_text"]
    assert documented == declared


# systemd credentials (LoadCredential= in the units): "credential:NAME" is a file in
# $CREDENTIALS_DIRECTORY, never a path of its own

def _credentials(tmp_path, **files):
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_a_credential_is_read_from_the_units_credentials_directory(tmp_path):
    creds = _credentials(tmp_path, **{"etcd-client.key": "KEY", "etcd-password": "s3cret\n"})
    path = write(tmp_path, '[etcd]\nkey = "credential:etcd-client.key"\n'
                 'password_file = "credential:etcd-password"\n')
    config = load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.etcd.key == creds / "etcd-client.key"
    assert config.etcd.resolved_password() == "s3cret"
    # a variable may name one too, and a plain path beside it stays a path
    config = load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds),
                                    "ETCDOPS_ETCD_KEY": str(creds / "etcd-password"),
                                    "ETCDOPS_ENCRYPTION_IDENTITY_FILE": "credential:etcd-password"})
    assert config.etcd.key == creds / "etcd-password"
    assert config.encryption.identity_file == creds / "etcd-password"


def test_a_credential_outside_a_unit_exits_10_naming_the_setting(tmp_path):
    path = write(tmp_path, f'[local]\ndir = "{tmp_path}/backups"\n'
                 '[encryption]\nidentity_file = "credential:age-identity.txt"\n')
    result = CliRunner().invoke(app, ["snapshot", "list", "--config", str(path)],
                                env={"CREDENTIALS_DIRECTORY": None})
    assert result.exit_code == 10, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:4: 'encryption.identity_file' = "
                           "'credential:age-identity.txt' is a systemd credential, but "
                           "$CREDENTIALS_DIRECTORY is not set")
    assert "run it under its unit" in line
    assert "ETCDOPS_ENCRYPTION_IDENTITY_FILE=/path/to/the/file" in line
    assert "Traceback" not in result.output


def test_a_credential_the_unit_did_not_pass_names_it_and_the_directory(tmp_path):
    creds = _credentials(tmp_path)
    path = write(tmp_path, '[etcd]\nkey = "credential:etcd-client.key"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert str(caught.value.message) == (
        f"{path}:2: 'etcd.key' = 'credential:etcd-client.key': no credential etcd-client.key in "
        f"$CREDENTIALS_DIRECTORY ({creds})")
    assert "LoadCredential=" in caught.value.hint


@pytest.mark.parametrize("name", ["", "../shadow", "b/", ".."])
def test_a_credential_is_a_file_name_never_a_path(tmp_path, name):
    creds = _credentials(tmp_path, b="x")
    (tmp_path / "shadow").write_text("readable, but not a credential")
    path = write(tmp_path, f'[etcd]\ncacert = "credential:{name}"\n')
    with pytest.raises(ConfigError, match="does not name a credential"):
        load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)})


# --- a secret's value is never in an error ------------------------------------------------

SECRET = "987654321"  # as a TOML number: the reviewer's case (an unquoted password)


def secret_settings() -> list[tuple[str, ...]]:
    """The keypath of every setting declared secret, nested tables included."""
    found = [(f.name,) for f in dataclasses.fields(Config) if f.metadata.get("secret")]
    for section, cls in SECTIONS.items():
        for spec in dataclasses.fields(cls):
            if spec.metadata.get("kind") == "section":
                found += [(section, spec.name, f.name) for f in
                          dataclasses.fields(spec.metadata["cls"]) if f.metadata.get("secret")]
            elif spec.metadata.get("secret"):
                found.append((section, spec.name))
    return found


def test_the_password_is_declared_secret_and_kept_out_of_repr():
    assert ("etcd", "password") in secret_settings()
    assert SECRET not in repr(EtcdConfig(password=SECRET))


@pytest.mark.parametrize("kind", ["str", "text", "bool", "float", "strings", "int", "bucket",
                                  "region", "url", "sse", "prefix", "duration", "size", "list",
                                  "path", "file"])
def test_no_error_about_a_secret_of_any_kind_shows_its_value(tmp_path, kind):
    from etcdops.config.loader import Origin
    from etcdops.config.settings import opt
    from etcdops.config.values import checked_value

    ranged = {"int": (1, 10), "float": (0.5, 1.5), "duration": ("1s", "1m"),
              "size": ("1KiB", "1MiB")}
    spec = opt(kind, secret=True, within=ranged.get(kind))
    marker = f"s3cr3t-{SECRET}"
    origin = Origin(write(tmp_path, ""), "")
    refused = 0
    for value in (int(SECRET), f"{marker}/", f"/{marker}", [marker, 1], {"v": marker}, "",
                  f"{SECRET}0h", f"{SECRET}TiB", True):
        try:
            checked_value(spec, value, ("etcd", "password"), origin)
        except ConfigError as error:
            refused += 1
            shown = [error.message, error.hint or "", "".join(
                traceback.format_exception(error))]
            assert not [text for text in shown if SECRET in text], (value, shown)
            assert "<redacted " in error.message
    assert refused >= 4  # every kind refuses most of these: the loop checked something


def bad_secret_files(keypath: tuple[str, ...]) -> list[str]:
    """TOML files that give the secret setting a value of the wrong type holding SECRET."""
    *tables, key = keypath
    header = f"[{'.'.join(tables)}]\n" if tables else ""
    return [f"{header}{key} = {value}\n" for value in (
        SECRET, f'["{SECRET}"]', f'{{ value = "{SECRET}" }}', f"{SECRET}.5")]


@pytest.mark.parametrize("keypath", secret_settings())
def test_a_bad_secret_in_the_file_is_nowhere_in_the_output(tmp_path, keypath):
    runner = CliRunner()
    for text in bad_secret_files(keypath):
        path = write(tmp_path, text)
        for extra, env in (([], {}), (["-o", "json"], {}), (["-v"], {}),
                           (["-o", "json", "-v"], {"ETCDOPS_LOG_FORMAT": "json"})):
            result = runner.invoke(app, ["snapshot", "list", "-c", str(path), *extra], env=env)
            assert result.exit_code == 10, result.output
            assert key_name_in(keypath, result.stderr)
            assert SECRET not in result.stdout + result.stderr, (text, extra, result.output)


def key_name_in(keypath: tuple[str, ...], text: str) -> bool:
    return ".".join(keypath) in text


def test_a_wrong_password_from_the_environment_is_nowhere_in_the_output(etcd_auth, tmp_path):
    wrong = f"not-the-password-{SECRET}"
    path = write(tmp_path, f'[etcd]\nendpoints = ["{etcd_auth.cluster.client_urls[0]}"]\n'
                 'user = "root"\ndial_timeout = "2s"\n'
                 f'[local]\ndir = "{tmp_path / "backups"}"\n')
    runner = CliRunner()
    for env in ({"ETCDOPS_ETCD_PASSWORD": wrong}, {"ETCDCTL_PASSWORD": wrong},
                {"ETCDCTL_USER": f"root:{wrong}"}):
        for extra in ([], ["-o", "json", "-v"]):
            result = runner.invoke(app, ["compact", "--dry-run", "-c", str(path), *extra],
                                   env=env | {"ETCDOPS_LOG_FORMAT": "json"} if extra else env)
            assert result.exit_code == 13, result.output  # etcd refused the login
            assert "authentication failed as user 'root'" in result.stderr, result.output
            assert SECRET not in result.stdout + result.stderr, (env, extra, result.output)


def test_no_command_takes_a_password_on_its_command_line():
    from typer.main import get_command

    def options(command, path=()):
        for param in getattr(command, "params", []):
            yield path, param.opts
        for name, sub in getattr(command, "commands", {}).items():
            yield from options(sub, path + (name,))

    seen = list(options(get_command(app)))
    assert len(seen) > 20  # every command's options were walked
    assert not [(path, opts) for path, opts in seen
                if any("password" in opt or "secret" in opt for opt in opts)]


@pytest.mark.parametrize("where", ["file", "environment"])
def test_a_user_given_as_name_and_password_is_refused_without_showing_it(tmp_path, where):
    # etcdctl takes --user name:password; only $ETCDCTL_USER is split so (as etcdctl does), and
    # anywhere else the password would end up in an error naming the user
    secret = "s3cr3t-pw-4711"
    path = tmp_path / "etcdops.toml"
    env = {}
    if where == "file":
        path.write_text(f'[etcd]\nuser = "root:{secret}"\n')
    else:
        path.write_text("")
        env = {"ETCDOPS_ETCD_USER": f"root:{secret}"}
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    shown = f"{caught.value.message} {caught.value.hint}"
    assert "invalid value for 'etcd.user'" in shown and "password_file" in shown
    assert secret not in shown and "root:" not in shown
