"""The ``wl`` command. Sub-command modules import only typer/rich at top level so that
``wl invoke`` starts fast; heavy libraries are imported inside the commands."""

from __future__ import annotations

import typer

from wlsim.cli import app as sim_app
from wlsim.traces.cli import app as trace_app

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="wl: a WebAssembly function platform and a simulator for its policies.")
app.add_typer(trace_app, name="trace", help="Inspect and convert invocation traces.")
app.add_typer(sim_app, name="sim", help="Replay traces through policies in the simulator.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
