"""The ``prov4torch`` command: a thin typer layer over library functions.

Exit codes: 0 success; 1 policy denial or validation failure; 2 usage or input error
(a one-line ``Error: ...`` on stderr, never a traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

import prov4torch
from prov4torch.errors import MergeConflictError, Prov4TorchError

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


def _summary(message: str) -> None:
    typer.echo(f"prov4torch: {message}", err=True)


@app.command(
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True, "allow_extra_args": True}
)
def run(
    ctx: typer.Context,
    script: Annotated[str, typer.Argument(help="The training script (or module, with -m).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", help="Output root (default: PROV4TORCH_DIR).")] = None,  # noqa: UP045
    experiment: Annotated[Optional[str], typer.Option(help="Experiment name.")] = None,  # noqa: UP045
    run_name: Annotated[Optional[str], typer.Option(help="Run name (default: the script's name).")] = None,  # noqa: UP045
    run_id: Annotated[Optional[str], typer.Option(help="Run id (default: a new time-ordered id).")] = None,  # noqa: UP045
    policy: Annotated[Optional[str], typer.Option(help="Policy TOML file (or 'default') to enforce.")] = None,  # noqa: UP045
    mode: Annotated[Optional[str], typer.Option(help="enforce (default with a policy) or audit.")] = None,  # noqa: UP045
    region: Annotated[Optional[str], typer.Option(help="Compute region, e.g. eu-west-1.")] = None,  # noqa: UP045
    purpose: Annotated[Optional[str], typer.Option(help="Purpose of the processing, e.g. training.")] = None,  # noqa: UP045
    intended_use: Annotated[Optional[str], typer.Option(help="Intended use of the models produced.")] = None,  # noqa: UP045
    nproc_per_node: Annotated[int, typer.Option(min=1, help="Ranks to launch through torch.distributed.run.")] = 1,
    module: Annotated[bool, typer.Option("-m", "--module", help="SCRIPT is a module name, as in python -m.")] = False,
) -> None:
    """Run a training script unchanged, recording its provenance; exits with the script's exit code.

    Everything after SCRIPT goes to the script untouched (its own --help or --out too).
    """
    from prov4torch import env as p4t_env
    from prov4torch.merge import merge as merge_files
    from prov4torch.recover import recover as recover_dir
    from prov4torch.runner import launch, resolve_target, run_script

    args = list(ctx.args)
    options = {"experiment": experiment, "run_name": run_name, "run_id": run_id, "policy": policy, "mode": mode,
               "region": region, "purpose": purpose, "intended_use": intended_use}
    try:
        resolve_target(script, module)
        if nproc_per_node == 1:
            code = run_script(script, args, module=module, out_dir=out, **options)
            from prov4torch.run import ACTIVE

            run_dir = ACTIVE.last_dir
        else:
            if policy is not None and Path(policy).exists():
                policy = str(Path(policy).resolve())
            names = {"run_name": p4t_env.RUN_NAME, "policy": p4t_env.POLICY, "mode": p4t_env.POLICY_MODE,
                     "region": p4t_env.REGION, "purpose": p4t_env.PURPOSE, "intended_use": p4t_env.INTENDED_USE}
            extra = {names[k]: str(v) for k, v in {**options, "policy": policy}.items() if k in names and v}
            code, run_dir = launch(script, args, nproc=nproc_per_node, module=module, out_dir=out,
                                   experiment=experiment, run_id=run_id, extra_env=extra)
            if run_dir.is_dir():
                recover_dir(run_dir)  # ranks that died before end_run: INCOMPLETE, not lost
    except Prov4TorchError as exc:
        fail(str(exc))
    if run_dir is not None and Path(run_dir).is_dir():
        try:
            report = merge_files([run_dir], Path(run_dir) / "run.prov.json")
            missing = report.missing()
            note = f"; ranks missing: {missing}" if missing else ""
            _summary(f"exit code {code}; provenance in {run_dir}/run.prov.json{note}")
        except Prov4TorchError as exc:
            _summary(f"could not merge the rank files of {run_dir}: {exc}")
    raise typer.Exit(code)


@app.command()
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Rank files or run directories.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The merged PROV-JSON file to write.")],
    strict: Annotated[bool, typer.Option(help="Fail (exit 1) when two inputs declare one id differently.")] = False,
) -> None:
    """Merge rank files (and whole runs) into one PROV document: a bundle per rank, a collection per job."""
    from prov4torch.merge import merge as merge_files

    progress = None
    bar = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("merging", total=None)
        bar.start()

        def progress(done: int, total: int, path: Path) -> None:
            bar.update(task, completed=done, total=total, description=f"merging {path.name}")

    try:
        report = merge_files(inputs, out, strict=strict, progress=progress)
    except MergeConflictError as exc:
        fail(str(exc), EXIT_DENIED)
    except Prov4TorchError as exc:
        fail(str(exc))
    finally:
        if bar is not None:
            bar.stop()
    for c in report.conflicts:
        typer.echo(f"conflict: {c.id} is declared differently in {c.first} and {c.second}", err=True)
    for run_id, ranks in report.missing().items():
        info = report.runs[run_id]
        typer.echo(f"warning: run {run_id}: rank(s) {ranks} missing (world size {info['world_size']}, "
                   f"{len(info['ranks'])} found)", err=True)
    typer.echo(f"merged {len(report.inputs)} file(s), {report.records} records ({report.shared} shared, "
               f"{report.deduplicated} duplicates dropped, {len(report.conflicts)} conflicts) into {out}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
