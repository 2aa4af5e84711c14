"""The textfile writer: what a run leaves in its file, and what the next run carries forward."""

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from etcdops.config import Config
from etcdops.config.settings import MetricsConfig
from etcdops.errors import LockedError
from etcdops.metrics import job_metrics
from etcdops.metrics.catalogue import METRICS, job_metrics_of
from etcdops.metrics.textfile import textfile_path

STORES = ("local", "primary")


def config(directory: Path | None, cluster: str = "main") -> Config:
    return Config(cluster=cluster, metrics=MetricsConfig(textfile_dir=directory))


def samples(path: Path) -> dict[tuple[str, frozenset], float]:
    """Every sample of a file by name and labels; fails on a timestamp or on a parse error."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            assert sample.timestamp is None, sample
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(path: Path, name: str, **labels: str) -> float:
    return samples(path)[name, frozenset({"cluster": "main", **labels}.items())]


def save(directory: Path, *, revision: int, failing: tuple[str, ...] = (), **kwargs) -> None:
    with job_metrics(config(directory), "snapshot", stores=STORES, **kwargs) as metrics:
        for store in STORES:
            if store in failing:
                metrics.failed(store=store)
            else:
                metrics.set("last_success_revision", revision, store=store)


def test_values_written_parse_without_timestamps(tmp_path):
    save(tmp_path, revision=42)
    path = tmp_path / "etcdops_main_snapshot.prom"
    assert value(path, "etcdops_snapshot_last_success_revision", store="primary") == 42
    assert value(path, "etcdops_snapshot_attempts_total", store="local") == 1
    assert value(path, "etcdops_snapshot_last_success_timestamp_seconds", store="local") > 1e9
    assert value(path, "etcdops_snapshot_last_success_duration_seconds", store="local") >= 0
    text = path.read_text()
    # HELP and TYPE for every family, and a sample line is name{labels} value: no timestamp
    assert "# TYPE etcdops_snapshot_attempts_total counter" in text
    for line in text.splitlines():
        if not line.startswith("#"):
            assert len(line.rsplit("} ", 1)[1].split()) == 1, line


def test_counters_and_timestamps_exist_at_zero_before_anything_fails(tmp_path):
    save(tmp_path, revision=1)
    path = tmp_path / "etcdops_main_snapshot.prom"
    for store in STORES:
        assert value(path, "etcdops_snapshot_failures_total", store=store) == 0
        assert value(path, "etcdops_snapshot_last_failure_timestamp_seconds", store=store) == 0
    with job_metrics(config(tmp_path), "prune", stores=STORES):
        pass
    prune = tmp_path / "etcdops_main_prune.prom"
    assert value(prune, "etcdops_prune_deletions_total", store="primary") == 0


def test_a_failed_run_keeps_the_last_success_and_counts_the_failure(tmp_path):
    save(tmp_path, revision=7)
    path = tmp_path / "etcdops_main_snapshot.prom"
    before = samples(path)
    with pytest.raises(RuntimeError, match="etcd down"), \
            job_metrics(config(tmp_path), "snapshot", stores=STORES):
        raise RuntimeError("etcd down")
    after = samples(path)
    for store in STORES:
        kept = [f"etcdops_snapshot_last_success_{name}" for name in
                ("timestamp_seconds", "duration_seconds", "revision")]
        for name in kept:
            key = name, frozenset({"cluster": "main", "store": store}.items())
            assert after[key] == before[key], name
        assert value(path, "etcdops_snapshot_attempts_total", store=store) == 2
        assert value(path, "etcdops_snapshot_failures_total", store=store) == 1
        assert value(path, "etcdops_snapshot_last_failure_timestamp_seconds", store=store) >= (
            value(path, "etcdops_snapshot_last_success_timestamp_seconds", store=store)
        )


def test_a_run_refused_by_another_runs_lock_is_not_a_run(tmp_path):
    save(tmp_path, revision=1)
    path = tmp_path / "etcdops_main_snapshot.prom"
    before = samples(path)
    with pytest.raises(LockedError), job_metrics(config(tmp_path), "snapshot", stores=STORES):
        raise LockedError("another snapshot save is running")
    assert samples(path) == before


def test_a_store_that_failed_alone_keeps_its_last_success(tmp_path):
    save(tmp_path, revision=1)
    save(tmp_path, revision=2, failing=("primary",))
    path = tmp_path / "etcdops_main_snapshot.prom"
    assert value(path, "etcdops_snapshot_last_success_revision", store="local") == 2
    assert value(path, "etcdops_snapshot_last_success_revision", store="primary") == 1
    assert value(path, "etcdops_snapshot_failures_total", store="primary") == 1
    assert value(path, "etcdops_snapshot_failures_total", store="local") == 0


def test_a_run_on_fewer_stores_keeps_the_others_and_a_store_removed_goes(tmp_path):
    save(tmp_path, revision=1)
    path = tmp_path / "etcdops_main_snapshot.prom"
    # --local-only: primary is configured, not attempted
    with job_metrics(config(tmp_path), "snapshot", stores=["local"], configured=STORES):
        pass
    assert value(path, "etcdops_snapshot_attempts_total", store="local") == 2
    assert value(path, "etcdops_snapshot_attempts_total", store="primary") == 1
    assert value(path, "etcdops_snapshot_last_success_revision", store="primary") == 1
    # primary no longer configured: its last success would age into an alert forever
    with job_metrics(config(tmp_path), "snapshot", stores=["local"]):
        pass
    assert not [key for key in samples(path) if ("store", "primary") in key[1]]


def test_one_file_per_cluster_and_job_named_with_the_cluster_as_it_is(tmp_path):
    # the stale-file rule reads the cluster label from the name: it must be the metrics' own
    for cluster in ("main", "k8s.events", "events_k8s-2"):
        for job in ("compaction", "drill"):
            with job_metrics(config(tmp_path, cluster), job):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "etcdops_events_k8s-2_compaction.prom", "etcdops_events_k8s-2_drill.prom",
        "etcdops_k8s.events_compaction.prom", "etcdops_k8s.events_drill.prom",
        "etcdops_main_compaction.prom", "etcdops_main_drill.prom",
    ]
    drill = samples(tmp_path / "etcdops_k8s.events_drill.prom")
    assert {name for name, _ in drill} <= {m.name for m in job_metrics_of("drill")}
    assert {dict(labels)["cluster"] for _, labels in drill} == {"k8s.events"}


def test_a_cluster_name_the_loader_refuses_writes_no_file_and_fails_no_job(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, "etcdops.metrics"), \
            job_metrics(config(tmp_path, "events/k8s"), "drill"):
        pass
    assert "cluster name 'events/k8s' is not one the configuration accepts" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_every_metric_is_named_after_its_job_so_no_two_files_share_a_series():
    for name in METRICS:
        job = name.split("_")[1]
        assert name in {m.name for m in job_metrics_of(job)}
        assert name.endswith(("_total", "_seconds", "_bytes", "_revision", "_alarms", "_verified"))


def test_the_file_is_replaced_whole_and_a_reader_never_sees_part_of_it(tmp_path):
    path = textfile_path(tmp_path, "main", "snapshot")
    save(tmp_path, revision=0)
    inode = path.stat().st_ino
    save(tmp_path, revision=0)
    # renamed over, not rewritten in place (checked once: over many writes the file system
    # may hand the first file's freed inode number to a later one)
    assert path.stat().st_ino != inode
    families = len(list(text_string_to_metric_families(path.read_text())))
    stop, seen = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            seen.append(len(list(text_string_to_metric_families(path.read_text()))))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for revision in range(1, 200):
            save(tmp_path, revision=revision)
    finally:
        stop.set()
        reader.join()
    assert seen and set(seen) == {families}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert value(path, "etcdops_snapshot_attempts_total", store="local") == 201


def test_runs_ending_together_lose_no_count(tmp_path):
    def runs() -> None:
        for _ in range(25):
            with job_metrics(config(tmp_path), "defrag") as metrics:
                metrics.add("reclaimed_bytes_total", 10)

    threads = [threading.Thread(target=runs) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    path = tmp_path / "etcdops_main_defrag.prom"
    assert value(path, "etcdops_defrag_attempts_total") == 100
    assert value(path, "etcdops_defrag_reclaimed_bytes_total") == 1000


def test_a_file_that_does_not_parse_starts_again_with_a_warning(tmp_path, caplog):
    path = tmp_path / "etcdops_main_compaction.prom"
    path.write_text("etcdops_compaction_attempts_total{cluster=\"main\" 3\n")
    with caplog.at_level(logging.WARNING, "etcdops.metrics"), \
            job_metrics(config(tmp_path), "compaction"):
        pass
    assert "does not parse" in caplog.text
    assert value(path, "etcdops_compaction_attempts_total") == 1


def test_a_directory_that_cannot_be_written_is_a_warning_not_a_failed_job(tmp_path, caplog):
    missing = tmp_path / "no-such-dir"
    with caplog.at_level(logging.WARNING, "etcdops.metrics"), \
            job_metrics(config(missing), "compaction") as metrics:
        metrics.set("revision", 5)
    assert f"metrics not written to {missing}" in caplog.text
    assert not missing.exists()


def test_without_a_textfile_dir_nothing_is_written_or_imported():
    code = (
        "import sys\n"
        "from etcdops.config import Config\n"
        "from etcdops.metrics import job_metrics\n"
        "with job_metrics(Config(), 'compaction') as metrics:\n"
        "    metrics.set('revision', 5)\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_undeclared_names_and_wrong_labels_are_refused(tmp_path):
    with job_metrics(config(tmp_path), "snapshot", stores=STORES) as metrics:
        with pytest.raises(ValueError, match="not declared"):
            metrics.set("no_such_seconds", 1)
        with pytest.raises(ValueError, match="labels"):
            metrics.set("last_success_revision", 1)
        with pytest.raises(ValueError, match="not a counter"):
            metrics.add("last_success_revision", 1, store="local")


# Under the units' UMask=0077 (run in a child process: the umask is process-wide). The child
# records, at each rename onto a .prom name (an audit hook runs just before the call), the
# mode of the file being renamed, which is the mode the final file has from its first moment;
# the parent meanwhile stats the final file as fast as it can, and closes the child's stdin
# once it has seen the file often enough (the child writes on until then).
_UMASK_WRITER = """
import os, select, stat, sys
from pathlib import Path
from etcdops.config import Config
from etcdops.config.settings import MetricsConfig
from etcdops.metrics import job_metrics
directory = Path(sys.argv[1])
renames = []
def audit(event, args):
    if event in ("os.rename", "os.replace"):
        source, target = os.fsdecode(args[0]), os.fsdecode(args[1])
        renames.append((Path(source).name, Path(target).name,
                        stat.S_IMODE(os.stat(source).st_mode)))
sys.addaudithook(audit)
os.umask(0o077)
config = Config(cluster="main", metrics=MetricsConfig(textfile_dir=directory))
revision = 0
while not select.select([sys.stdin], [], [], 0)[0]:
    with job_metrics(config, "compaction") as metrics:
        metrics.set("revision", revision)
    if revision == 0:
        print("started", flush=True)
    revision += 1
for source, target, mode in renames:
    print(source, target, oct(mode))
"""


def test_the_file_is_never_seen_unreadable_under_umask_0077(tmp_path):
    path = textfile_path(tmp_path, "main", "compaction")
    child = subprocess.Popen([sys.executable, "-c", _UMASK_WRITER, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "started\n"
    modes, seen, until = set(), 0, time.monotonic() + 0.5
    while seen < 1000 or time.monotonic() < until:  # the file is there from the first write on
        modes.add(path.stat().st_mode & 0o777)
        seen += 1
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert modes == {0o644}
    renames = [line.split() for line in out.splitlines()]
    onto_final = [(source, mode) for source, target, mode in renames if target == path.name]
    writes = len(onto_final)
    assert writes >= 1
    # what becomes the file is already 0644, and no temporary name is one node_exporter reads
    assert {mode for _, mode in onto_final} == {"0o644"}
    assert not [source for source, _, _ in renames if source.endswith(".prom")]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert value(path, "etcdops_compaction_attempts_total") == writes
