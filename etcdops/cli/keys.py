"""`etcdops keys`: age identities for backups."""

from pathlib import Path
from typing import Annotated

import typer

from etcdops.cli.common import Invocation, command

app = typer.Typer(
    help="Manage the age keys that encrypt backups.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("generate")
@command
def generate(
    run: Invocation,
    out: Annotated[Path, typer.Option("--out", help="Where to write the identity (mode 0600).")],
) -> None:
    """Create an age X25519 identity; print the recipient (age1...) to put in the config."""
    from etcdops.crypto.keys import generate_identity_file

    recipient = generate_identity_file(out)
    run.emit(
        {"identity_file": str(out), "recipient": str(recipient)},
        lambda console: console.print(
            f"identity written to {out} (keep it off backup hosts)\n"
            f"recipient: {recipient}\n"
            f"put the recipient in [encryption] recipients; "
            f"point [encryption] identity_file at {out} where you restore",
            markup=False,
        ),
    )
