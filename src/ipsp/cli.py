"""The ``ipsp`` command: one entry point, one subcommand per pipeline stage.

Subcommand modules stay light (heavy libraries are imported inside the commands)
so ``ipsp --help`` answers at once.
"""

from __future__ import annotations

import logging
import sys

import typer

from ipsp import capacity_cli
from ipsp import demo as demo_cli
from ipsp.detection import cli as detection_cli
from ipsp.errors import UserError
from ipsp.localstack.cli import stack_app
from ipsp.preprocessing import cli as preprocessing_cli
from ipsp.producer import cli as producer_cli
from ipsp.serving import cli as serving_cli
from ipsp.streaming import cli as streaming_cli
from ipsp.streaming import maintenance as maintenance_cli
from ipsp.training import cli as training_cli

app = typer.Typer(
    name="ipsp",
    help="IPSP: image processing and storage pipeline for real-time traffic analytics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# in pipeline order, so `ipsp --help` reads like the data flow
app.command("demo")(demo_cli.demo)
app.add_typer(stack_app, name="stack")
app.command("synth")(preprocessing_cli.synth)
app.command("pack")(preprocessing_cli.pack)
app.command("produce")(producer_cli.produce)
app.command("stream")(streaming_cli.stream)
detection_cli.register(app)
training_cli.register(app)
app.command("serve")(serving_cli.serve)
app.command("report")(serving_cli.report)
app.add_typer(maintenance_cli.rollups_app, name="rollups")
app.command("prune")(maintenance_cli.prune_command)
app.command("capacity")(capacity_cli.capacity)


def main() -> None:
    """Console entry point: run the app, turning UserError into a one-line message."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # standalone mode: click prints usage errors itself and exits with their code
        app()
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
