"""Where `etcdops restore`'s time goes: the evidence bench/restore.py --profile adds after its
rounds, for a lead deciding what to change in etcdops (this benchmark changes nothing there).

- One more restore under cProfile (the main thread; where it waits for etcdutl, the staging
  etcd or the background fsync shows as that wait). The decode runs on three threads and only
  the first (reading, the object's sha256, age) is profiled: its waits for zstd's thread show
  as `acquire` of a lock (the hand-off's full queue).
- Probes, each one process, measured as the rounds are:
  - `get`: the object in one GET read in 1 MiB blocks and thrown away, by botocore as etcdops
    reads it: the download alone, and moto's share of it;
  - `etcdops fetch --from local`: etcdops' decode chain alone (object sha256, age, zstd, etcd's
    trailer, the fsynced file), reading the local store's copy instead of the network; its CPU
    above its wall is the decode's threads overlapping;
  - `age | zstd (local)`: the shell's decode alone from the same file;
  - `etcdutl` and `etcdutl --skip-hash-check` on the same plain snapshot, alternated: what
    etcdutl's own sha256 check of a snapshot etcdops has already checked costs.
"""

from __future__ import annotations

import json
import os
import pstats
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import Children, etcdops_binary, measured_run
from moto_s3 import PRIMARY_BUCKET, PRIMARY_REGION, MotoServer
from shell_tools import Tools

if TYPE_CHECKING:
    from restore import Backup

PROFILE_ROWS = 14
ETCDUTL_PAIRS = 2

# Run by this interpreter with the fake credentials: one GET, read as etcdops' S3 reader does.
_GET = """
import sys
import botocore.session
from botocore.config import Config
session = botocore.session.Session()
client = session.create_client("s3", region_name=sys.argv[1], endpoint_url=sys.argv[2],
                               config=Config(s3={"addressing_style": "path"}))
body = client.get_object(Bucket=sys.argv[3], Key=sys.argv[4])["Body"]
size = 0
while block := body.read(1 << 20):
    size += len(block)
print(size)
"""


def profile(
    children: Children, tools: Tools, moto: MotoServer, env: list[str], backup: Backup,
    restore_argv: Sequence[str], workdir: Path, *, member: Callable[[Path], list[str]],
    clean: Callable[[], None], wait_quiet: float,
) -> dict[str, Any]:
    """The profile and the probes for one size, as one JSON-ready document. restore_argv is
    the measured etcdops restore; member(data_dir) gives etcdutl the member flags the rounds
    use; clean() removes what a restore left."""
    found: dict[str, Any] = {"profile": _cprofile(children, restore_argv, workdir)}
    clean()
    probes: dict[str, dict[str, float]] = {}

    def probe(name: str, argv: Sequence[str]) -> None:
        os.sync()
        measured = measured_run(
            children, argv, workdir / "probe.out", workdir / "probe.err", label=name,
            servers={"moto": moto.cpu}, wait_quiet=wait_quiet,
        )
        probes[name] = {
            "wall_s": measured.run.wall_s, "cpu_s": measured.run.cpu_s,
            "moto_cpu_s": measured.cpu_of["moto"], "others_cores":
                measured.other_cpu_s / measured.run.wall_s,
        }
        print(f"  probe {name}: {measured.run.wall_s:.2f} s, cpu {measured.run.cpu_s:.2f} s, "
              f"moto {measured.cpu_of['moto']:.2f} s", flush=True)

    probe("get", [*env, sys.executable, "-c", _GET, PRIMARY_REGION, moto.url, PRIMARY_BUCKET,
                  backup.key])
    plain, shell_plain = workdir / "probe-plain.db", workdir / "probe-shell.db"
    probe("etcdops fetch --from local", [
        *env, etcdops_binary(), "snapshot", "fetch", backup.manifest["id"], "--from", "local",
        "--out", str(plain), "--config", str(backup.config), "--output", "json",
    ])
    stored = _local_object(backup)
    probe("age | zstd (local)", ["/bin/bash", "-c", " | ".join([
        shlex.join([tools.age, "-d", "-i", str(backup.identity), str(stored)]),
        shlex.join([tools.zstd, "-d", "-q", "-o", str(shell_plain)]),
    ])])
    shell_plain.unlink()
    data_dir = workdir / "probe-data"
    for _ in range(ETCDUTL_PAIRS):
        for name, extra in (("etcdutl", []), ("etcdutl --skip-hash-check", ["--skip-hash-check"])):
            probe_name = name if name not in probes else f"{name} (again)"
            probe(probe_name, [tools.etcdutl, "snapshot", "restore", str(plain),
                               *member(data_dir), *extra])
            clean()
    plain.unlink()
    found["probes"] = probes
    return found


def _local_object(backup: Backup) -> Path:
    """The local store's copy of the backup's object: [local] dir / the object key."""
    import tomllib

    local = Path(tomllib.loads(backup.config.read_text())["local"]["dir"])
    return local / backup.manifest["object_key"]


def _cprofile(children: Children, restore_argv: Sequence[str], workdir: Path) -> dict[str, Any]:
    """One etcdops restore under cProfile: the functions with the most own and cumulative time."""
    command = list(restore_argv).index(etcdops_binary())
    prof = workdir / "etcdops.prof"
    argv = [*restore_argv[:command], sys.executable, "-m", "cProfile", "-o", str(prof), "-m",
            "etcdops", *restore_argv[command + 1:]]
    os.sync()
    run = children.run(argv, workdir / "profile.out", workdir / "profile.err")
    durations = json.loads((workdir / "profile.out").read_text())["durations"]
    stats = pstats.Stats(str(prof))
    rows = [
        {"function": f"{Path(file).name}:{line}({name})", "calls": calls,
         "own_s": round(own, 3), "cumulative_s": round(cumulative, 3),
         "etcdops": "/etcdops/" in file}
        for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items()
    ]
    return {
        "wall_s": run.wall_s,
        "durations": durations,
        "by_own_time": sorted(rows, key=lambda r: -r["own_s"])[:PROFILE_ROWS],
        "etcdops_by_cumulative": sorted(
            (r for r in rows if r["etcdops"]), key=lambda r: -r["cumulative_s"]
        )[:PROFILE_ROWS],
    }


def print_profile(found: dict[str, Any]) -> None:
    """The profile and the probes, as print_table shows them."""
    prof = found["profile"]
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in prof["durations"].items())
    print(f"  one more etcdops restore under cProfile: {prof['wall_s']:.2f} s ({steps})")
    for title, key in (("own time", "by_own_time"),
                       ("etcdops' functions, cumulative", "etcdops_by_cumulative")):
        print(f"    by {title}:")
        for row in prof[key]:
            print(f"      {row['own_s']:7.2f} s own {row['cumulative_s']:7.2f} s cum "
                  f"{row['calls']:>7}  {row['function']}")
    print("  probes (one run each; wall / cpu / moto cpu):")
    for name, figures in found["probes"].items():
        print(f"    {name:32} {figures['wall_s']:6.2f} s {figures['cpu_s']:6.2f} s "
              f"{figures['moto_cpu_s']:6.2f} s  (others {figures['others_cores']:.2f} cores)")
