"""The ``prov4torch`` command: a thin typer layer over library functions.

Exit codes: 0 success; 1 policy denial or validation failure; 2 usage or input error
(a one-line ``Error: ...`` on stderr, never a traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

import prov4torch
from prov4torch.audit.export import FORMATS as EXPORT_FORMATS
from prov4torch.errors import MergeConflictError, Prov4TorchError

app = typer.Typer(
    name="prov4torch",
    help="Record, merge, check and audit W3C PROV provenance of PyTorch training runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: metavars, not Python types; what a terminal and a pipe show alike
)

EXIT_OK, EXIT_DENIED, EXIT_INPUT = 0, 1, 2


class PolicyMode(StrEnum):
    enforce = "enforce"
    audit = "audit"


class RecordKind(StrEnum):
    dataset = "dataset"
    model = "model"
    activity = "activity"
    entity = "entity"
    agent = "agent"


ExportFormat = StrEnum("ExportFormat", {f.replace("-", "_"): f for f in EXPORT_FORMATS})  # type: ignore[misc]


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
    require_signed: Annotated[bool, typer.Option(
        "--require-signed", help="Refuse documents no verified attestation beside them names (exit 1).")] = False,
    key: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP045
        "--key", help="A trusted PEM public key (repeatable; also PROV4TORCH_TRUSTED_KEYS).")] = None,
) -> None:
    """Check PROV-JSON files against a policy: exit 0 allow, 1 deny, 2 bad input."""
    from prov4torch.audit.load import expand_dirs
    from prov4torch.evidence import attest, keys

    try:
        if require_signed:
            trusted = keys.trusted_keys(key or [])
            unsigned = [f for f in (attest.document_signed(p, trusted) for p in expand_dirs(files)) if not f.ok]
            if unsigned:
                for f in unsigned:
                    typer.echo(f"UNSIGNED {f.path}: {f.detail}")
                typer.echo(f"DENY: {len(unsigned)} document(s) not signed by a trusted key (--require-signed)")
                raise typer.Exit(EXIT_DENIED)
        report = prov4torch.check(files, policy)
    except Prov4TorchError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for v in report.violations:
            typer.echo(f"DENY {v.rule}: {v.subject}: {v.reason}")
            typer.echo(f"     datasets: {', '.join(v.datasets)}; attribute: {v.attribute}")
        for p in report.prevented:
            typer.echo(f"PREVENTED at runtime {p['rule']}: {p['reason']}")
            typer.echo(f"     datasets: {', '.join(p['datasets'])}; run: {p['activity']}")
        n = len(report.violations)
        extra = f"; {len(report.prevented)} use(s) prevented at runtime" if report.prevented else ""
        typer.echo(f"{report.verdict.upper()}: policy {report.policy.name!r}, {len(report.files)} file(s), "
                   f"{n} violation{'s' if n != 1 else ''}{extra}")
    raise typer.Exit(EXIT_DENIED if report.violations else EXIT_OK)


@app.command()
def export(
    paths: Annotated[list[Path], typer.Argument(help="Run directories, PROV-JSON files or an output root.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="prov-o is TriG; annex-iv is a directory "
                                                                     "or a .zip.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (atomically).")],
) -> None:
    """Hand-over formats: CycloneDX 1.6 ML-BOM, SPDX 3, OpenLineage, PROV-O, an EU AI Act Annex IV pack."""
    from prov4torch.audit.export import export as export_files
    from prov4torch.audit.pack import write_pack

    try:
        written = write_pack(paths, out) if fmt.value == "annex-iv" else export_files(paths, fmt.value, out)
    except Prov4TorchError as exc:
        fail(str(exc))
    typer.echo(f"{fmt.value}: {written}")


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(help="Run directories, PROV-JSON files or an output root.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write (atomically).")],
    compare: Annotated[bool, typer.Option(
        "--compare", help="Overlay the runs' metrics; diff parameters and data.")] = False,
    policy: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--policy", "-p", help="Also check each run against this policy (TOML file or 'default').")] = None,
    key: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP045
        "--key", help="A trusted PEM public key for the signature status (repeatable).")] = None,
    graph: Annotated[bool, typer.Option(help="Draw each run's lineage graph (needs Graphviz).")] = True,
) -> None:
    """One self-contained HTML page (opens offline): runs, metrics, data with tags, checkpoints, decisions."""
    from prov4torch.audit.sections import write_report as write_page
    from prov4torch.evidence import keys
    from prov4torch.governance.evaluate import judge
    from prov4torch.governance.policy import load_policy

    try:
        rules = load_policy(policy) if policy is not None else None
        written = write_page(paths, out, compare=compare, judge=judge(rules) if rules else None,
                             policy_name=rules.name if rules else "", keys=keys.trusted_keys(key or []), graph=graph)
    except Prov4TorchError as exc:
        fail(str(exc))
    typer.echo(f"report: {written.path} ({written.runs} run(s), {written.size / 1e6:.2f} MB, "
               f"{written.seconds:.1f} s)")


@app.command()
def attest(
    paths: Annotated[list[Path], typer.Argument(help="Checkpoints (files or directories) to sign.")],
    oms: Annotated[bool, typer.Option("--oms", help="Write an OpenSSF model-signing (OMS) signature.")] = False,
    key: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--key", help="The EC private key (PEM) to sign with.")] = None,
) -> None:
    """Sign checkpoints in the OpenSSF model-signing format (<checkpoint>.sig), verifiable by `verify`."""
    from prov4torch.evidence import oms as oms_format

    if not oms:
        fail("say which signature to write: --oms (runs are attested by themselves when a key is configured)")
    if key is None:
        fail("--oms needs --key EC_PRIVATE_KEY.pem (model-signing signs with an elliptic-curve key)")
    try:
        for p in paths:
            typer.echo(f"signed {p}: {oms_format.sign(p, key)}")
    except Prov4TorchError as exc:
        fail(str(exc))


@app.command()
def verify(
    paths: Annotated[list[Path], typer.Argument(help="Run directories, PROV documents or checkpoints.")],
    key: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP045
        "--key", help="A trusted PEM public key (repeatable; also PROV4TORCH_TRUSTED_KEYS).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Verify signed evidence: attestations and lineage cards against trusted keys and the bytes on disk.

    Exit 0 verified, 1 not verified, 2 unreadable."""
    from prov4torch.evidence import attest, keys

    try:
        findings = attest.verify(paths, keys.trusted_keys(key or []), keys.trusted_key_paths(key or []))
    except Prov4TorchError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for f in findings:
            typer.echo(f.line())
    if any(f.unreadable for f in findings):
        raise typer.Exit(EXIT_INPUT)
    raise typer.Exit(EXIT_OK if findings and all(f.ok for f in findings) else EXIT_DENIED)


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
    mode: Annotated[Optional[PolicyMode], typer.Option(help="enforce (default with a policy) or audit.")] = None,  # noqa: UP045
    region: Annotated[Optional[str], typer.Option(help="Compute region, e.g. eu-west-1.")] = None,  # noqa: UP045
    purpose: Annotated[Optional[str], typer.Option(help="Purpose of the processing, e.g. training.")] = None,  # noqa: UP045
    intended_use: Annotated[Optional[str], typer.Option(help="Intended use of the models produced.")] = None,  # noqa: UP045
    nproc_per_node: Annotated[int, typer.Option(min=1, help="Ranks to launch through torch.distributed.run.")] = 1,
    module: Annotated[bool, typer.Option("-m", "--module", help="SCRIPT is a module name, as in python -m.")] = False,
    render_svg: Annotated[bool, typer.Option("--render", help="Also draw run.svg (needs Graphviz).")] = False,
    write_report: Annotated[bool, typer.Option(
        "--report", help="Also write report.html: the run as one self-contained page.")] = False,
    openlineage: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--openlineage", metavar="URL", help="Send OpenLineage run events to this endpoint as the run starts and "
                                             "ends (also OPENLINEAGE_URL); never slows or fails training.")] = None,
    data_tags: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP045
        "--data-tags", help="Governance tags for data and third-party checkpoints, without code changes: a TOML "
                            "tags file, a Croissant JSON-LD file or a dataset card (repeatable).")] = None,
    data: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP045
        "--data", help="A data directory the script reads with plain open(): each file it reads there is a dataset "
                       "(by content) in the role its use shows (repeatable).")] = None,
) -> None:
    """Run a training script unchanged, recording its provenance; exits with the script's exit code.

    Everything after SCRIPT goes to the script untouched (its own --help or --out too); a `--` right after
    SCRIPT is only a separator and is dropped (`prov4torch run train.py -- --lr 0.1`): pass `-- --` for a
    literal one.
    """
    from prov4torch import env as p4t_env
    from prov4torch.autolog.openlineage_live import LiveEmitter
    from prov4torch.autolog.runner import Outcome, finish, launch, resolve_target, run_script

    args = list(ctx.args)
    if args[:1] == ["--"]:
        del args[0]
    if data:
        for d in data:
            if not d.is_dir():
                fail(f"{d}: no such directory (--data)")
        os.environ[p4t_env.DATA_DIRS] = os.pathsep.join(str(d.resolve()) for d in data)
    if data_tags:
        from prov4torch.governance.declared import parse_tags_file

        for f in data_tags:
            try:
                parse_tags_file(f)  # checked now: a bad file is one line before the script starts
            except Prov4TorchError as exc:
                fail(str(exc))
        os.environ[p4t_env.DATA_TAGS] = os.pathsep.join(str(f.resolve()) for f in data_tags)
    from prov4torch import remote

    try:
        bound = remote.bound_for(out)
    except Prov4TorchError as exc:
        fail(str(exc))
    if bound is not None:  # object storage: the run is written to the spool, then merged, then published whole
        out = remote.spool_root(bound)
    options = {"experiment": experiment, "run_name": run_name, "run_id": run_id, "policy": policy,
               "mode": mode.value if mode is not None else None,
               "region": region, "purpose": purpose, "intended_use": intended_use}
    emitter: LiveEmitter | None = None

    def wrap_up(outcome: Outcome) -> None:
        """Merge, draw, sign, publish, summarise: after the script, or inside its os._exit."""
        notes = finish(outcome, render_svg=render_svg, policy=policy, html_report=write_report, emitter=emitter).notes
        if bound is not None and out is not None and outcome.run_dir is not None:
            where = os.path.relpath(outcome.run_dir.resolve(), Path(out).resolve())  # <experiment>/<run id>
            target = remote.join(bound, *Path(where).parts)
            published = remote.publish(outcome.run_dir, target)
            if not published.failed:  # the files are at the URL now, not in the spool
                notes = [n.replace(str(outcome.run_dir), remote.redact(target)) for n in notes]
            notes.append(published.note())
        for note in notes:
            _summary(note)

    try:
        resolve_target(script, module)
        url = openlineage or p4t_env.get(p4t_env.OPENLINEAGE_URL)
        emitter = LiveEmitter(url) if url else None
        if nproc_per_node == 1:
            outcome = run_script(script, args, module=module, out_dir=out, emitter=emitter, on_hard_exit=wrap_up,
                                 **options)
        else:
            if policy is not None and Path(policy).exists():
                policy = str(Path(policy).resolve())
            names = {"run_name": p4t_env.RUN_NAME, "policy": p4t_env.POLICY, "mode": p4t_env.POLICY_MODE,
                     "region": p4t_env.REGION, "purpose": p4t_env.PURPOSE, "intended_use": p4t_env.INTENDED_USE}
            extra = {names[k]: str(v) for k, v in {**options, "policy": policy}.items() if k in names and v}
            outcome = launch(script, args, nproc=nproc_per_node, module=module, out_dir=out,
                             experiment=experiment, run_id=run_id, extra_env=extra, emitter=emitter)
    except Prov4TorchError as exc:
        fail(str(exc))
    wrap_up(outcome)
    if outcome.signal is not None:  # merged and summarised: now exit as the signal would
        import signal

        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(outcome.signal, signal.SIG_DFL)
        os.kill(os.getpid(), outcome.signal)
    raise typer.Exit(outcome.exit_code)


@app.command()
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Rank files or run directories.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The merged PROV-JSON file to write.")],
    strict: Annotated[bool, typer.Option(help="Fail (exit 1) when two inputs declare one id differently.")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for every rank of each run "
                                        "directory's job to finish (a job on several nodes).")] = 0,
    world_size: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--world-size", min=1, help="The job's ranks, when its journals cannot tell (with --wait).")] = None,
) -> None:
    """Merge rank files (and whole runs) into one PROV document: a bundle per rank, a collection per job."""
    from prov4torch.audit.merge import merge as merge_files
    from prov4torch.audit.merge import wait_for_ranks

    if wait or world_size:
        for where, ranks in wait_for_ranks([p for p in inputs if p.is_dir()], wait, world_size).items():
            said = "no rank has started" if ranks == [-1] else f"rank(s) {ranks} have not finished"
            typer.echo(f"warning: {where}: {said} after {wait:g} s; merging what there is", err=True)

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
    for r in report.repeats:
        typer.echo(f"note: {r.id} is in both {r.first} and {r.second} with the same records: kept once", err=True)
    for run_id, ranks in report.missing().items():
        info = report.runs[run_id]
        typer.echo(f"warning: run {run_id}: rank(s) {ranks} missing (world size {info['world_size']}, "
                   f"{len(info['ranks'])} found)", err=True)
    typer.echo(f"merged {len(report.inputs)} file(s), {report.records} records ({report.shared} shared, "
               f"{report.deduplicated} duplicates dropped, {len(report.conflicts)} conflicts"
               f"{f', {len(report.repeats)} repeated rank(s) kept once' if report.repeats else ''}) into {out}")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="PROV-JSON files (a directory stands for its *.json).")],
    lenient: Annotated[bool, typer.Option(help="Accept missing relation endpoints, PROV-Dictionary and "
                                                "mentionOf records (with warnings).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Every problem, not only the first.")] = False,
) -> None:
    """Check PROV-JSON structure: one line per invalid file; exit 0 valid, 1 invalid, 2 unreadable."""
    from prov4torch.audit.validate import validate as validate_files

    results = validate_files(files, lenient=lenient)
    invalid = unreadable = 0
    for r in results:
        if r.unreadable:
            unreadable += 1
            typer.echo(f"Error: {r.problems[0]}", err=True)
            continue
        if r.errors:
            invalid += 1
            shown = r.errors if verbose else r.errors[:1]
            more = f" (and {len(r.errors) - 1} more)" if len(r.errors) > 1 and not verbose else ""
            for problem in shown:
                typer.echo(f"{problem}{more}")
        if r.warnings and (verbose or not r.errors):
            shown = r.warnings if verbose else r.warnings[:1]
            more = f" (and {len(r.warnings) - 1} more)" if len(r.warnings) > 1 and not verbose else ""
            for problem in shown:
                typer.echo(f"warning: {problem}{more}", err=True)
    valid = len(results) - invalid - unreadable
    typer.echo(f"{valid} valid, {invalid} invalid" + (f", {unreadable} unreadable" if unreadable else ""))
    raise typer.Exit(EXIT_INPUT if unreadable else EXIT_DENIED if invalid else EXIT_OK)


@app.command()
def lineage(
    inputs: Annotated[list[str], typer.Argument(help="PROV-JSON files or run directories, then the ID.")],
    up: Annotated[bool, typer.Option("--up", help="Upstream: what it came from (the default).")] = False,
    down: Annotated[bool, typer.Option("--down", help="Downstream: what it reached.")] = False,
    depth: Annotated[Optional[int], typer.Option(min=1, help="Follow at most this many relations.")] = None,  # noqa: UP045
    kind: Annotated[Optional[RecordKind], typer.Option("--type", help="Only records of this kind.")] = None,  # noqa: UP045
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What data trained this model (--up), which models did this dataset reach (--down). ID last."""
    from prov4torch.audit.query import lineage as query_lineage

    if len(inputs) < 2:
        fail("give one or more files or run directories, then the id to start from")
    if up and down:
        fail("choose --up or --down, not both")
    *paths, focus = inputs  # strings: a Path would turn https:// into https:/
    try:
        focal, hits = query_lineage(paths, focus, direction="down" if down else "up", depth=depth,
                                    kind=kind.value if kind else None, locate=_content_digests)
    except Prov4TorchError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"focus": focal.as_dict(), "direction": "down" if down else "up",
                               "results": [h.as_dict() for h in hits]}, indent=2, default=str))
        return
    typer.echo(f"{'downstream of' if down else 'upstream of'} {focal.label} ({focal.kind}): {len(hits)} record(s)")
    if str(focal.attrs.get("lineageGap")).lower() == "true":
        typer.echo("  lineage gap: the run that made it recorded no identified training data (see p4t:lineageGap; "
                   "record the data with prov4torch run --data DIR, log_dataset or track)")
    for h in hits:
        attrs = ", ".join(f"{k}={v}" for k, v in h.attrs.items() if k != "sha256")
        typer.echo(f"  {h.distance:>3}  {h.kind:<8} {h.label}" + (f"  [{attrs}]" if attrs else ""))


def _content_digests(text: str) -> list[str]:
    """What a checkpoint or dataset at the path ``text`` is known by, most specific first: the digest of the
    weights it holds (the same whatever else sits beside them), then of its bytes (a file's sha256, a
    directory's root digest); none when ``text`` names no file or directory."""
    from prov4torch.record.checkpoints import checkpoint_digest

    path = Path(text)
    if not text.strip() or not path.exists():  # Path("") is the working directory
        return []
    try:
        ident = checkpoint_digest(path)
    except (OSError, Prov4TorchError) as exc:
        fail(f"cannot read {path}: {exc}")
    return [d for d in dict.fromkeys([ident["weights_sha256"], ident["sha256"]]) if d]


@app.command()
def show(
    files: Annotated[list[Path], typer.Argument(help="PROV-JSON files or run directories.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A readable summary: runs, parameters, metrics, datasets with tags, models, energy, hardware."""
    from prov4torch.audit.show import summarize, write_json

    try:
        summary = summarize(files)
    except Prov4TorchError as exc:
        fail(str(exc))
    if as_json:
        write_json(summary, sys.stdout)
        return
    _print_summary(summary)


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width), soft_wrap=True)
    c = s["counts"]
    console.print(f"[bold]{', '.join(s['files'])}[/bold]: {c['entity']} entities, {c['activity']} activities, "
                  f"{c['agent']} agents, {c['relations']} relations")

    def table(title: str, rows: list[dict[str, Any]], columns: list[str], limit: int = 50) -> None:
        if not rows:
            return
        t = Table(title=title, title_justify="left")
        for col in columns:
            t.add_column(col)
        for r in rows[:limit]:
            t.add_row(*(_fmt(r.get(col)) for col in columns))
        console.print(t)
        if len(rows) > limit:  # a large document: the text stays readable (and fast); --json has every row
            console.print(f"... and {len(rows) - limit} more {title.lower()} (use --json for all)")

    for run in s["runs"][:20]:
        table(f"Run {run['id']}", [{"field": k, "value": v} for k, v in run.items() if k != "id" and v is not None],
              ["field", "value"])
    if len(s["runs"]) > 20:
        console.print(f"... and {len(s['runs']) - 20} more runs (use --json for all)")
    if s["parameters"]:
        table("Parameters", [{"name": k, "value": v} for k, v in sorted(s["parameters"].items())], ["name", "value"])
    owners = {m.get("run") for m in s["metrics"]}
    if len(owners) > 1:  # several ranks or runs: say whose series each row is
        table("Metrics", [m | {"run": _short_run(m.get("run"))} for m in s["metrics"]],
              ["name", "context", "run", "count", "last", "min", "max"])
    else:
        table("Metrics", s["metrics"], ["name", "context", "count", "last", "min", "max"])
    table("Datasets", s["datasets"], ["name", "id", "originCountry", "jurisdiction", "personalData",
                                      "consentScope", "license", "consentExpires"])
    table("Models", s["models"], ["name", "version", "id", "jurisdiction", "license", "intendedUse",
                                  "consentExpires"])
    if s["environment"]:
        table("Environment", [{"field": k, "value": v} for k, v in s["environment"].items()], ["field", "value"])
    if s["other_activities"] and not s["runs"]:
        console.print("Activities: " + ", ".join(s["other_activities"]))


def _short_run(owner: Any) -> str:
    """``p4t:run/01a219af-688f-.../rank/0`` as ``01a219af/rank/0``."""
    if not isinstance(owner, str):
        return ""
    run_id, _, rest = owner.removeprefix("p4t:run/").partition("/")
    return f"{run_id[:8]}/{rest}" if rest else run_id


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


@app.command()
def render(
    inputs: Annotated[list[Path], typer.Argument(help="PROV-JSON files or run directories.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output file: .svg, .png or .dot.")],
    policy: Annotated[Optional[str], typer.Option(help="Draw this policy's violations in red.")] = None,  # noqa: UP045
    focus: Annotated[Optional[str], typer.Option(help="Draw only the lineage of this id.")] = None,  # noqa: UP045
    down: Annotated[bool, typer.Option("--down", help="With --focus: downstream instead of upstream.")] = False,
    up: Annotated[bool, typer.Option("--up", help="With --focus: upstream (the default).")] = False,
    depth: Annotated[Optional[int], typer.Option(min=1, help="With --focus: at most this many relations.")] = None,  # noqa: UP045
    detail: Annotated[bool, typer.Option(help="Draw every record: metric series, ranks, shared agents.")] = False,
    engine: Annotated[Optional[str], typer.Option(help="Graphviz layout engine (default: by size).")] = None,  # noqa: UP045
    timeout: Annotated[float, typer.Option(help="Seconds Graphviz may take before falling back to sfdp.")] = 60.0,
) -> None:
    """Draw an SVG (or PNG/DOT) audit graph; violations of --policy in red."""
    from prov4torch.audit.render import render as render_graph
    from prov4torch.governance.evaluate import judge

    if up and down:
        fail("choose --up or --down, not both")
    try:
        drawing = render_graph(inputs, out, judge=judge(policy) if policy else None, focus=focus,
                               direction="down" if down else "up", depth=depth, detail=detail, engine=engine,
                               timeout_s=timeout)
    except Prov4TorchError as exc:
        fail(str(exc))
    folded = ", ".join(f"{n} {t}" for t, n in sorted(drawing.folded.items()))
    typer.echo(f"{out}: {drawing.nodes} nodes, {drawing.edges} edges ({drawing.engine})"
               + (f"; folded: {folded}" if folded else ""))


index_app = typer.Typer(help="The lineage index of a store (checkpoints' lineage by digest).",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")
keys_app = typer.Typer(help="Signing keys for attestations and lineage cards.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    path: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--path", help="Where to write the private key (default: $XDG_CONFIG_HOME/prov4torch/signing-key.pem)."
    )] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Make an ed25519 signing key (mode 0600) and its public half beside it, to hand to others."""
    from prov4torch.evidence import keys

    try:
        private, public, keyid = keys.init_key(path, force=force)
    except (Prov4TorchError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"private key: {private}\npublic key:  {public}\nkey id:      {keyid}")


INDEX_URL = typer.Option("--index", help="A PostgreSQL lineage index (postgresql://user@host/db; default: "
                         "PROV4TORCH_INDEX, else STORE/.lineage/index.sqlite).")


@index_app.command("rebuild")
def index_rebuild(
    store: Annotated[Path, typer.Argument(help="The output root of your runs (PROV4TORCH_DIR).")],
    index: Annotated[Optional[str], INDEX_URL] = None,  # noqa: UP045
) -> None:
    """Rebuild the lineage index of STORE from every *.prov.json under STORE."""
    from prov4torch.governance.lineage import rebuild_index

    try:
        files, cards = rebuild_index(store, index)
    except Prov4TorchError as exc:
        fail(str(exc))
    typer.echo(f"{store}: {cards} checkpoint lineage card(s) from {files} PROV file(s)")


@app.command()
def upload(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose files were kept (a failed publish).")],
    url: Annotated[str, typer.Argument(help="Where they go: the run's own prefix (s3://bucket/prefix/exp/run).")],
) -> None:
    """Publish a run directory to object storage: each file verified by sha256, then the local copy dropped."""
    from prov4torch import remote

    if not run_dir.is_dir():
        fail(f"{run_dir}: no such directory")
    target = remote.as_url(url)
    if target is None:
        fail(f"{url}: not a storage URL (s3://bucket/prefix/...)")
    done = remote.publish(run_dir, target)
    if done.failed:
        fail(done.note())
    typer.echo(done.note())


@index_app.command("upstream")
def index_upstream(
    model: Annotated[str, typer.Argument(help="A model id (p4t:model/...) or any digest of its checkpoint.")],
    store: Annotated[Path, typer.Option("--store", help="The output root of your runs.")] = Path("."),
    index: Annotated[Optional[str], INDEX_URL] = None,  # noqa: UP045
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Everything MODEL derives from (base models, datasets), transitively, from the lineage index."""
    from prov4torch.governance.index import LineageIndex

    try:
        found = LineageIndex(store, index).upstream(model)
    except Prov4TorchError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"model": model, "upstream": found}, indent=2))
        return
    from prov4torch.audit.text import clean

    typer.echo("\n".join(clean(x) for x in found) if found else f"{clean(model)}: nothing upstream in the index")


def _run_fast(argv: list[str]) -> None:
    """`prov4torch run` parsed without typer's per-option validators (``fastpath``); returns when it cannot."""
    from types import SimpleNamespace

    from .fastpath import parse

    parsed = parse(run, argv)
    if parsed is None:
        return
    kwargs, script, rest = parsed
    try:
        run(SimpleNamespace(args=rest), script, **kwargs)  # type: ignore[arg-type]
    except typer.Exit as done:
        sys.exit(done.exit_code)
    sys.exit(0)


def _is_choice(param: Any) -> bool:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return isinstance(annotation, type) and issubclass(annotation, Enum)


def plain_command() -> Any:
    """The click command of ``app`` with help that shows metavars, not Python types: every positional is
    PATH (one name across commands), every option taking a value its name in capitals."""
    command = typer.main.get_command(app)
    todo = [command]
    while todo:
        cmd = todo.pop()
        todo.extend(getattr(cmd, "commands", {}).values())
        for param in cmd.params:
            if param.param_type_name == "argument":
                param.metavar = "PATH" if param.name in ("files", "inputs", "paths") else str(param.name).upper()
                param.display_type_rich = lambda ctx: None  # the name says it; no "<list[Path]>" beside it
            elif not getattr(param, "is_flag", False) and param.metavar is None and param.name \
                    and not _is_choice(param):  # a choice shows its values: [enforce|audit]
                param.metavar = param.name.upper()
    return command


def _merge_waiter(argv: list[str]) -> Callable[[list[Path]], bool] | None:
    """For ``merge --wait S`` of a run on object storage: whether to fetch it again (ranks of the job still
    missing, time left), polling once a second."""
    if len(argv) < 3 or argv[1] != "merge":
        return None
    values = {}
    for i, token in enumerate(argv):
        name, eq, value = token.partition("=")
        if name in ("--wait", "--world-size"):
            values[name] = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
    try:
        seconds, world = float(values.get("--wait") or 0), int(values.get("--world-size") or 0) or None
    except ValueError:
        return None  # typer says what is wrong with it
    if seconds <= 0:
        return None
    import time

    from prov4torch.audit.merge import wait_for_ranks

    deadline = time.monotonic() + seconds

    def again(local_dirs: list[Path]) -> bool:
        if not wait_for_ranks(local_dirs, 0, world) or time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
        return True

    return again


class _ReadProgress:
    """``reading FILE: 123 of 466 MB (26%)`` on the terminal while a large file is read (``stream.progress_to``),
    at most four times a second, the line cleared when the command ends."""

    MIN_BYTES = 32 << 20  # smaller files are read too fast to be worth a line

    def __init__(self) -> None:
        self.shown = False
        self.last = 0.0

    def __call__(self, source: str, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if total < self.MIN_BYTES or (now - self.last < 0.25 and done < total):
            return
        self.last = now
        name = Path(source).name[-60:]
        sys.stderr.write(f"\r\x1b[Kreading {name}: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB "
                         f"({100 * done // total}%)")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


@contextlib.contextmanager
def _reading_progress(argv: list[str]) -> Iterator[None]:
    """Long reads show progress on a terminal, never on a pipe (nor for ``run``, whose terminal is the script's,
    or ``merge``, which shows the files it merges)."""
    command = argv[1] if len(argv) > 1 else ""
    if not sys.stderr.isatty() or command in ("run", "merge"):
        yield
        return
    from prov4torch.audit.stream import progress_to

    shown = _ReadProgress()
    try:
        with progress_to(shown):
            yield
    finally:
        shown.clear()


def main() -> None:
    """Console-script entry point: a user error is one line and exit 2, never a traceback."""

    try:
        if len(sys.argv) > 2 and sys.argv[1] == "run":
            _run_fast(sys.argv[2:])  # returns only when typer must parse
        from prov4torch.remote import fetched_argv

        with fetched_argv(sys.argv, _merge_waiter(sys.argv)) as sys.argv, _reading_progress(sys.argv):
            result = plain_command()(standalone_mode=False)  # usage errors come back as exceptions: one line each
        sys.exit(result if isinstance(result, int) else 0)
    except typer.exceptions.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(1)
    except typer.exceptions.TyperException as exc:  # a usage error: one line naming the command, exit 2
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "prov4torch"
        message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is what was asked for
            typer.echo(exc.format_message(), err=True)  # type: ignore[attr-defined]
        else:
            typer.echo(f"Error: {message} (see '{where} --help')", err=True)
        sys.exit(getattr(exc, "exit_code", EXIT_INPUT) or EXIT_INPUT)
    except Prov4TorchError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    except (OSError, RecursionError, MemoryError, UnicodeError) as exc:
        typer.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from prov4torch import env

        if env.flag(env.DEBUG, False):
            raise
        typer.echo(f"Error: internal error {type(exc).__name__}: {exc} (a bug in prov4torch: please report it; "
                   "PROV4TORCH_DEBUG=1 shows the traceback)", err=True)
        sys.exit(EXIT_INPUT)


if __name__ == "__main__":
    main()
