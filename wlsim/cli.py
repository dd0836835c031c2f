"""``wl sim ...`` commands (replay, compare)."""
import typer

app = typer.Typer(no_args_is_help=True)
