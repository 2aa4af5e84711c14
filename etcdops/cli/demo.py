"""`etcdops demo`: the whole job on an embedded default."""

from typing import Annotated

import typer

from etcdops.cli.common import Invocation, command
from etcdops.cli.render import table
from etcdops.units import format_duration


@command
def demo(
    run: Invocation,
    objects: Annotated[
        int, typer.Option(help="How many Kubernetes objects to load.", min=1)
    ] = 3000,
    keep: Annotated[bool, typer.Option(help="Keep the demo's directory to look around.")] = False,
) -> None:
    """Run a throwaway etcd, load Kubernetes objects, back up, check and fetch; then clean up."""
    from etcdops.demo.run import run_demo

    report = run_demo(run.reporter(), objects=objects, keep=keep)
    rows = [[s.name, format_duration(s.seconds), s.detail] for s in report.steps]
    run.emit(report.as_dict(), lambda console: (
        console.print(table("etcdops demo", ["step", "took", "what happened"], rows)),
        console.print(
            f"demo files kept in {report.workdir}" if report.kept else "demo files removed",
            markup=False,
        ),
    ))
