"""`snapshot prune` and `list` against damaged local backups, and against an S3-compatible server
that refuses an optional call, each as an operator meets it."""

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.report import LogReporter
from tests.backup.two_regions import toml_for, with_s3
from tests.s3proxy import ACCESS_DENIED, NOT_IMPLEMENTED, list_uploads

LATER = "2027-06-01"  # long after every backup here: only keep_min and the checks protect them


@pytest.fixture
def etcdops(backup_toml, etcd_loaded):
    """The CLI against a local-only store of etcd_loaded's backups: args -> result."""
    runner = CliRunner()

    def invoke(*args, env=None):
        return runner.invoke(app, [*args, "--config", str(backup_toml)], env=env)

    return invoke


def save(etcdops, count):
    """count local backups: their manifests, oldest first."""
    manifests = []
    for _ in range(count):
        saved = etcdops("snapshot", "save", "--local-only", "-o", "json")
        assert saved.exit_code == 0, saved.output
        manifests.append(json.loads(saved.stdout))
    return manifests


def prune(etcdops, *args, keep_min=1):
    done = etcdops("snapshot", "prune", "-o", "json", *args,
                   env={"ETCDOPS_RETENTION_KEEP_MIN": str(keep_min)})
    assert done.exit_code == 0, done.output
    [store] = json.loads(done.stdout)["stores"].values()
    return store, done


def listed(etcdops, *args):
    result = etcdops("snapshot", "list", "-o", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_copy_whose_bytes_were_replaced_is_not_verified_and_prune_keeps_a_good_one(
    etcdops, backup_config
):
    b1, b2, b3, b4 = save(etcdops, 4)
    assert len({b["object_size"] for b in (b1, b2, b3, b4)}) == 1  # the size check cannot tell
    root = backup_config.local.dir
    shutil.copyfile(root / b3["object_key"], root / b4["object_key"])
    assert etcdops("snapshot", "status", b4["id"]).exit_code == 15

    backups = {b["id"]: b for b in listed(etcdops)["backups"]}
    assert backups[b4["id"]]["verified"] is False
    assert backups[b4["id"]]["copies"]["local"]["condition"] == "unchecked"
    assert backups[b4["id"]]["stores"]["local"].startswith("changed since checked at")
    assert backups[b3["id"]]["verified"] is True
    assert backups[b3["id"]]["copies"]["local"]["method"] == "sha256 as written"

    store, done = prune(etcdops, "--now", LATER)
    actions = {d["id"]: (d["condition"], d["action"]) for d in store["decisions"]}
    assert actions == {
        b1["id"]: ("verified", "delete"), b2["id"]: ("verified", "delete"),
        b3["id"]: ("verified", "keep"), b4["id"]: ("damaged", "delete"),
    }
    assert any(b4["id"] in note and "older backups are kept instead" in note
               for note in store["notes"])
    assert b4["id"] in done.stderr and "warning" in done.stderr
    [kept] = listed(etcdops)["backups"]
    assert kept["id"] == b3["id"] and kept["verified"] is True
    assert kept["copies"]["local"]["method"] == "sha256 re-read"  # confirmed before deleting
    status = etcdops("snapshot", "status", "latest", "-o", "json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["backup_id"] == b3["id"]


def test_unchecked_backups_are_confirmed_before_anything_is_deleted(etcdops, backup_config):
    b1, b2 = save(etcdops, 2)
    for path in backup_config.local.dir.rglob("*.check.json"):
        path.unlink()  # as backups taken before check records existed
    copies = [b["copies"]["local"] for b in listed(etcdops)["backups"]]
    assert [(c["condition"], c["problem"]) for c in copies] == [("unchecked", "never checked")] * 2
    planned, _ = prune(etcdops, "--now", LATER, "--dry-run")
    assert not list(backup_config.local.dir.rglob("*.check.json"))  # a dry run writes nothing
    store, _ = prune(etcdops, "--now", LATER)
    actions = {d["id"]: (d["condition"], d["action"]) for d in store["decisions"]}
    assert actions == {b1["id"]: ("unchecked", "delete"), b2["id"]: ("verified", "keep")}
    assert planned["decisions"] == store["decisions"]
    [kept] = listed(etcdops)["backups"]
    assert kept["verified"] is True


@pytest.mark.parametrize("edit", ["object_key", "whole manifest"])
def test_prune_deletes_the_files_of_the_backup_it_decided_on(etcdops, backup_config, edit):
    b1, b2, b3, b4 = save(etcdops, 4)
    root = backup_config.local.dir
    manifest_path = root / b1["object_key"].replace(".db.zst.age", ".manifest.json")
    b4_manifest = root / b4["object_key"].replace(".db.zst.age", ".manifest.json")
    if edit == "object_key":
        doc = json.loads(manifest_path.read_text())
        doc["object_key"] = b4["object_key"]
        manifest_path.write_text(json.dumps(doc))
    else:
        shutil.copyfile(b4_manifest, manifest_path)

    doc = listed(etcdops, "--all")
    assert b1["id"] not in {b["id"] for b in doc["backups"]}
    [damaged] = doc["damaged"]["local"]
    assert damaged["id"] == b1["id"]
    assert damaged["problem"].startswith("manifest names another backup")

    store, _ = prune(etcdops, "--now", LATER)
    actions = {d["id"]: (d["condition"], d["action"]) for d in store["decisions"]}
    assert actions[b1["id"]] == ("damaged", "delete")
    assert actions[b4["id"]] == ("verified", "keep")
    assert (root / b4["object_key"]).is_file() and b4_manifest.is_file()
    assert not manifest_path.exists() and not (root / b1["object_key"]).exists()
    assert etcdops("snapshot", "status", b4["id"]).exit_code == 0


def test_a_garbled_manifest_is_shown_warned_and_pruned_like_an_incomplete_object(
    etcdops, backup_config
):
    b1, b2 = save(etcdops, 2)
    root = backup_config.local.dir
    manifest_path = root / b2["object_key"].replace(".db.zst.age", ".manifest.json")
    manifest_path.write_bytes(manifest_path.read_bytes()[:40])  # truncated

    everything = listed(etcdops, "--all")
    assert [b["id"] for b in everything["backups"]] == [b1["id"]]
    [damaged] = everything["damaged"]["local"]
    assert damaged["id"] == b2["id"] and "unreadable" in damaged["problem"]
    text = etcdops("snapshot", "list", "--all")
    assert f"damaged manifest in local: {b2['id']}" in " ".join(text.stdout.split())
    plain = etcdops("snapshot", "list")
    assert "warning" in plain.stderr and b2["id"] in plain.stderr

    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S%z")
    store, _ = prune(etcdops, "--now", soon)
    actions = {d["id"]: (d["condition"], d["action"]) for d in store["decisions"]}
    assert actions == {b1["id"]: ("verified", "keep"), b2["id"]: ("damaged", "keep")}
    assert (root / b2["object_key"]).is_file()

    store, _ = prune(etcdops, "--now", LATER)
    actions = {d["id"]: (d["condition"], d["action"]) for d in store["decisions"]}
    assert actions == {b1["id"]: ("verified", "keep"), b2["id"]: ("damaged", "delete")}
    assert not (root / b2["object_key"]).exists() and not manifest_path.exists()
    assert not list(root.rglob(f"{b2['id']}*"))
    assert listed(etcdops, "--all")["damaged"] == {"local": []}


@pytest.fixture
def refusing_primary(backup_config, s3, s3_proxy, tmp_path):
    """(config, toml, proxy, refuse): backups in every store, the primary reached through a
    proxy; refuse(status, code, message) makes it answer every ListMultipartUploads so."""
    proxy = s3_proxy()
    config = with_s3(backup_config, s3, primary_url=proxy.url)

    def refuse(status, code, message):
        proxy.refuse(list_uploads, status, code, message)

    return config, toml_for(config, tmp_path / "s3.toml"), proxy, refuse


def save_at(config, *hours_ago, now):
    return [save_snapshot(config, LogReporter(), clock=lambda m=now - timedelta(hours=h): m)
            .manifest.id for h in hours_ago]


@pytest.mark.parametrize("status, code, message, words", [
    (501, "NotImplemented", NOT_IMPLEMENTED, "the server does not implement ListMultipartUploads"),
    (403, "AccessDenied", ACCESS_DENIED, "allow s3:ListBucketMultipartUploads"),
])
def test_prune_applies_retention_where_unfinished_uploads_cannot_be_listed(
    refusing_primary, s3, status, code, message, words
):
    config, toml, proxy, refuse = refusing_primary
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    old, older, new = save_at(config, 30, 50, 1, now=now)
    refuse(status, code, message)
    done = CliRunner().invoke(
        app, ["snapshot", "prune", "-o", "json", "--config", str(toml),
              "--now", now.strftime("%Y-%m-%dT%H:%M:%S%z")],
        env={"ETCDOPS_RETENTION_KEEP_MIN": "1"},
    )
    # retention was applied everywhere: a missing optional call is a warning, not a failure
    assert done.exit_code == 0, done.output
    stores = json.loads(done.stdout)["stores"]
    for name, result in stores.items():
        assert sorted(result["deleted"]) == sorted([old, older]), name
        assert result["error"] is None
    [note] = stores["primary"]["notes"]
    assert words in note and f"{code}: {message}" in note
    assert "retention still applies to the complete backups" in note
    assert stores["local"]["notes"] == stores["replica"]["notes"] == []
    warned = [line for line in done.stderr.splitlines() if "ListMultipartUploads" in line]
    assert len(warned) == 1 and warned[0].startswith("warning"), done.stderr
    assert "retry later" not in done.stderr
    assert proxy.count(list_uploads) == 1
    left = s3.client().list_objects_v2(Bucket="etcdops-primary")["Contents"]
    assert len(left) == 3 and all(new in o["Key"] for o in left)  # its manifest, check, object


def test_list_all_says_once_that_unfinished_uploads_cannot_be_listed(refusing_primary):
    config, toml, proxy, refuse = refusing_primary
    [backup_id] = save_at(config, 1, now=datetime.now(UTC))
    refuse(501, "NotImplemented", NOT_IMPLEMENTED)
    done = CliRunner().invoke(
        app, ["snapshot", "list", "--all", "-o", "json", "--config", str(toml)]
    )
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert [b["id"] for b in doc["backups"]] == [backup_id]
    assert doc["unfinished"] == {"local": [], "primary": [], "replica": []}
    [warning] = doc["warnings"]
    assert warning.startswith("primary: the server does not implement ListMultipartUploads")
    assert doc["unreachable"] == {}


def test_prune_goes_on_where_unfinished_uploads_cannot_be_aborted(refusing_primary, s3):
    config, toml, proxy, _ = refusing_primary
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    old, new = save_at(config, 30, 1, now=now)
    # a save killed mid-upload two days before: retention would abort it
    killed = "test/snapshots/2026/11/23/20261123T120000Z-0a0a0a.db.zst.age"
    s3.client().create_multipart_upload(Bucket="etcdops-primary", Key="backups/" + killed)
    proxy.refuse(lambda r: r.method == "DELETE" and r.param("uploadId") is not None,
                 403, "AccessDenied", ACCESS_DENIED)
    done = CliRunner().invoke(
        app, ["snapshot", "prune", "-o", "json", "--config", str(toml),
              "--now", now.strftime("%Y-%m-%dT%H:%M:%S%z")],
        env={"ETCDOPS_RETENTION_KEEP_MIN": "1"},
    )
    assert done.exit_code == 0, done.output
    primary = json.loads(done.stdout)["stores"]["primary"]
    assert primary["deleted"] == [old] and primary["error"] is None
    [note] = primary["notes"]
    assert "access denied to AbortMultipartUpload" in note
    assert "s3:AbortMultipartUpload on arn:aws:s3:::etcdops-primary/backups/*" in note
    uploads = s3.client().list_multipart_uploads(Bucket="etcdops-primary").get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["backups/" + killed]  # kept, and said so
    assert new in " ".join(o["Key"] for o in s3.client().list_objects_v2(
        Bucket="etcdops-primary")["Contents"])
