"""The ``wl`` command. Sub-command modules import only typer/rich/httpx at top level so that
``wl invoke`` starts fast; heavy libraries are imported inside the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from wl.loop.cli import register as register_loop
from wl.settings import ENV_VARS
from wlruntime.cli import register as register_runtime
from wlsim.cli import app as sim_app
from wlsim.rl.cli import app as rl_app
from wlsim.rl.cli import train_app
from wlsim.traces.cli import app as trace_app

# Listed under every `wl --help` (rich markup: one line each).
ENV_HELP = "Environment variables: " + " · ".join(f"[bold]{name}[/] {text}" for name, text in ENV_VARS.items())

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="wl: a WebAssembly function platform and a simulator for its policies.",
                  epilog=ENV_HELP)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"wl {version('wl')}")
        except PackageNotFoundError:
            typer.echo("wl (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _main(show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                     help="print wl's version and exit")] = False) -> None:
    """wl: a WebAssembly function platform and a simulator for its policies."""
app.add_typer(trace_app, name="trace", help="Inspect, convert and synthesise invocation traces.")
app.add_typer(sim_app, name="sim", help="Replay traces through policies in the simulator.")
app.add_typer(train_app, name="train",
              help="Train a learned routing policy in the simulator (alias of `wl rl train`); "
                   "`wl train ... sweep` for seeds x λ.")
app.add_typer(rl_app, name="rl", help="Train and evaluate learned (RL) policies.")
register_runtime(app)
register_loop(app)  # wl load / calibrate / fidelity: the live loop


def main() -> None:
    app()


if __name__ == "__main__":
    main()
