"""The ``prov4torch`` command: a thin typer layer over library functions.

Exit codes: 0 success; 1 policy denial or validation failure; 2 usage or input error
(a one-line ``Error: ...`` on stderr, never a traceback).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

import prov4torch
from prov4torch.errors import Prov4TorchError

app = typer.Typer(
    name="prov4torch",
    help="Record, merge, check and audit W3C PROV provenance of PyTorch training runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_DENIED, EXIT_INPUT = 0, 1, 2


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    """Print a one-line error and exit."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prov4torch {prov4torch.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Record, merge, check and audit W3C PROV provenance of PyTorch training runs."""


@app.command()
def recover(
    run_dir: Annotated[Path, typer.Argument(help="The run directory: <out>/<experiment>/<run_id>.")],
) -> None:
    """Rebuild PROV-JSON (status INCOMPLETE) for ranks that died before end_run."""
    try:
        results = prov4torch.recover(run_dir)
    except Prov4TorchError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{run_dir}: {exc.strerror or exc}")
    for r in results:
        if r.action == "complete":
            typer.echo(f"{r.rank_file}: complete ({r.status}), left as it is")
        else:
            skipped = f", {r.skipped_lines} unreadable journal lines skipped" if r.skipped_lines else ""
            typer.echo(f"{r.rank_file}: rebuilt, status {r.status}, {r.points} metric points{skipped}")


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="PROV-JSON files or run directories (checked together).")],
    policy: Annotated[str, typer.Option("--policy", "-p", help="Policy TOML file, or 'default'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check PROV-JSON files against a policy: exit 0 allow, 1 deny, 2 bad input."""
    try:
        report = prov4torch.check(files, policy)
    except Prov4TorchError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for v in report.violations:
            typer.echo(f"DENY {v.rule}: {v.subject}: {v.reason}")
            typer.echo(f"     datasets: {', '.join(v.datasets)}; attribute: {v.attribute}")
        n = len(report.violations)
        typer.echo(f"{report.verdict.upper()}: policy {report.policy.name!r}, {len(report.files)} file(s), "
                   f"{n} violation{'s' if n != 1 else ''}")
    raise typer.Exit(EXIT_DENIED if report.violations else EXIT_OK)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
