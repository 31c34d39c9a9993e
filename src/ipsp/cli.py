"""The ``ipsp`` command: one entry point, one subcommand per pipeline stage.

Subcommand modules stay light (heavy libraries are imported inside the commands)
so ``ipsp --help`` answers at once.
"""

from __future__ import annotations

import logging
import sys

import typer

from ipsp.errors import UserError

app = typer.Typer(
    name="ipsp",
    help="IPSP: image processing and storage pipeline for real-time traffic analytics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- subcommand registration (one line each) ---


def main() -> None:
    """Console entry point: run the app, turning UserError into a one-line message."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
