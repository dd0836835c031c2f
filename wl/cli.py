"""The ``wl`` command. Sub-command modules import only typer/rich/httpx at top level so that
``wl invoke`` starts fast; heavy libraries are imported inside the commands."""

from __future__ import annotations

import typer

from wl.loop.cli import register as register_loop
from wlruntime.cli import register as register_runtime
from wlsim.cli import app as sim_app
from wlsim.rl.cli import app as rl_app
from wlsim.rl.cli import train_cmd
from wlsim.traces.cli import app as trace_app

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="wl: a WebAssembly function platform and a simulator for its policies.")
app.add_typer(trace_app, name="trace", help="Inspect, convert and synthesise invocation traces.")
app.add_typer(sim_app, name="sim", help="Replay traces through policies in the simulator.")
app.command("train", help="Train a learned routing policy in the simulator (alias of `wl rl train`).")(train_cmd)
app.add_typer(rl_app, name="rl", help="Train and evaluate learned (RL) policies.")
register_runtime(app)
register_loop(app)  # wl load / calibrate / fidelity: the live loop


def main() -> None:
    app()


if __name__ == "__main__":
    main()
