"""``prov4torch run``: execute a training script unchanged under a managed run.

Single process: the script runs in this interpreter exactly as ``python SCRIPT ARGS``
would run it (``__main__``, ``sys.argv``, the script's folder first on ``sys.path``),
with autolog patches for the duration. A ``prov4torch.start_run()`` inside the script
joins the managed run; its ``end_run()`` leaves it open for the runner to close.
Several processes: ``torch.distributed.run`` launches the ranks (each runs
``prov4torch_cli.worker``, i.e. this module's ``run_script``), all with one run id,
and the rank files are merged into ``run.prov.json`` when the job ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import runpy
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from .. import env
from ..audit.openlineage import start_event
from ..errors import ConfigError, PolicyViolation, Prov4TorchError, SignalExit
from ..record.attestation import sign_documents
from ..record.disabled import DisabledRun
from ..record.distributed import uuid7
from ..record.run import ACTIVE, Run, default_root
from .children import await_children, patch_spawn, prepare_children
from .openlineage_live import LiveEmitter

HELP_FLAGS = {"-h", "--help"}
RECORD_ERROR_EXIT = 1  # the script succeeded but its provenance is incomplete (documented in docs/cli.md)


def resolve_target(target: str, module: bool) -> Path:
    """The file that will run (a script, or a module's source); ConfigError if there is none."""
    if module:
        try:
            spec = importlib.util.find_spec(target)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"no module named {target!r}: {exc}") from None
        if spec is None or not spec.origin or not os.path.isfile(spec.origin):
            raise ConfigError(f"no module named {target!r} (check the name and that it is importable)")
        if spec.submodule_search_locations:  # a package: python -m runs its __main__
            main = Path(spec.origin).parent / "__main__.py"
            if not main.is_file():
                raise ConfigError(f"{target!r} is a package without __main__.py; it cannot be run with -m")
            return main
        return Path(spec.origin).resolve()
    path = Path(target)
    if not path.is_file():
        raise ConfigError(f"{target}: no such script; give the path of a Python file (or -m MODULE)")
    return path.resolve()


_PACKAGE = str(Path(__file__).resolve().parent.parent) + os.sep


def _script_traceback(exc: BaseException, script: Path) -> None:
    """Print the traceback as ``python SCRIPT`` would: from the script's own frame down, without the frames of
    prov4torch's patches (the frame that raised stays when the error is prov4torch's own)."""
    tb: TracebackType | None = exc.__traceback__
    start = tb
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == script:
            start = tb
            break
        tb = tb.tb_next
    shown = traceback.TracebackException(type(exc), exc, start)
    for te in _chain(shown):
        frames = list(te.stack)
        kept = [f for f in frames if not f.filename.startswith(_PACKAGE)]
        kind = te.exc_type
        own = kind is not None and issubclass(kind, Prov4TorchError)
        interrupted = kind is not None and issubclass(kind, KeyboardInterrupt)  # (Ctrl-C before the script began)
        if frames and not interrupted and (not kept or own):
            kept = [*kept, frames[-1]]
        te.stack = traceback.StackSummary.from_list(kept)
    print("".join(shown.format()), end="", file=sys.stderr)


def _chain(te: traceback.TracebackException) -> list[traceback.TracebackException]:
    out: list[traceback.TracebackException] = []
    todo: list[traceback.TracebackException | None] = [te]
    while todo:
        item = todo.pop()
        if item is not None and all(item is not o for o in out):
            out.append(item)
            todo += [item.__cause__, item.__context__]
    return out


@dataclass
class Outcome:
    """What ``prov4torch run`` did: the script's exit code and where its record is (nothing in globals)."""

    exit_code: int
    run_dir: Path | None = None
    status: str | None = None
    signal: int | None = None  # the signal that ended it, if one did (exit as it would, once reported)
    rank_files: list[Path] = field(default_factory=list)
    merged: Path | None = None
    svg: Path | None = None
    attestation: Path | None = None
    report: Path | None = None
    notes: list[str] = field(default_factory=list)  # one line each, for the person at the terminal


def run_script(target: str, args: list[str], *, module: bool = False, emitter: LiveEmitter | None = None,
               on_hard_exit: Callable[[Outcome], None] | None = None, **run_options: Any) -> Outcome:
    """Run ``target`` (a script path, or a module with ``module=True``) under a managed run.

    The outcome's exit code is the one the script itself would have had, except that:

    * a script that called ``end_run("FAILED")`` (or KILLED/BLOCKED) and then exited 0 is recorded with
      that status and exits 1;
    * when the run's provenance could not be recorded completely (``Run.record_error``), a one-line
      error naming the journal is printed and a script that exited 0 exits ``RECORD_ERROR_EXIT`` (1).

    A script that ends its process with ``os._exit`` (a distributed job's way round a hanging teardown) skips
    everything after it, this function's return too: its run is concluded inside that call -- closed, then
    ``on_hard_exit`` (the CLI's merge and summary) -- before the process ends with the code it gave.
    """
    script = resolve_target(target, module)
    import torch  # the script will need it; importing it first keeps capture consistent

    if env.flag(env.DISABLED, False):  # the kill switch: run the script plainly, record nothing
        policy = run_options.get("policy") or env.get(env.POLICY)
        if policy:
            raise ConfigError(f"{env.DISABLED}=1 would switch off the policy {policy!r}: unset {env.DISABLED} "
                              "to enforce it, or drop --policy to run unrecorded")
        ACTIVE.run = DisabledRun()
        return Outcome(_execute(script, target, args, module, None)[1])
    run = Run(script=script, managed=True, **run_options)
    ACTIVE.run = run
    if emitter is not None:
        emitter.send(start_event(run.run_id, run.experiment, run.run_name, _now(), torch.__version__))
    undo_children = prepare_children(run, script)  # Python children running the script again record as ranks

    def hard_exit(code: int) -> int:
        outcome = _conclude(run, "FINISHED" if code == 0 else "FAILED", code, None, None, args)
        if on_hard_exit is not None:
            on_hard_exit(outcome)
        return outcome.exit_code

    try:
        status, code, signal_number, error = _execute(script, target, args, module, run, hard_exit)
    finally:
        undo_children()
    return _conclude(run, status, code, signal_number, error, args)


def _conclude(run: Run, status: str, code: int, signal_number: int | None, error: BaseException | None,
              args: list[str]) -> Outcome:
    """The run closed with what the script did, and the outcome the CLI reports."""
    if status == "FINISHED" and run.requested_status not in (None, "FINISHED"):
        status, code = str(run.requested_status), code or 1
    if not run.ended:
        run.close(status, exit_code=code, signal_number=signal_number, exception=error)
    if run.status == "BLOCKED" and code == 0:
        code = 1  # a policy stopped a use (in a thread, or a caught PolicyViolation): never a clean exit
    await_children(run.dir)  # child ranks finishing their record are merged with it
    if run.record_error:
        print(f"prov4torch: error: {run.record_error}", file=sys.stderr)
        code = code or RECORD_ERROR_EXIT
    if code == 0 and HELP_FLAGS & set(args) and not run.recorded_work():
        shutil.rmtree(run.dir, ignore_errors=True)  # the script only printed its help: no run happened
        return Outcome(code, status=run.status)
    return Outcome(code, run.dir, run.status, signal_number, attestation=run.attestation)


def _hard_exit_hook(conclude: Callable[[int], int]) -> Callable[[Run], Callable[[], None]]:
    """``os._exit`` patched in this process (not in its forked children: they inherit the patch, and pass
    through): ``conclude`` runs first, then the process ends at once, as the script asked (the exit code may
    become ``RECORD_ERROR_EXIT`` as at a normal end). Nothing else the script skipped by it runs."""

    def install(_run: Run) -> Callable[[], None]:
        original, pid = os._exit, os.getpid()

        def _exit(status: int) -> NoReturn:
            if os.getpid() == pid and os._exit is _exit:
                os._exit = original  # once, whichever thread comes first
                try:
                    status = conclude(status)
                except BaseException as exc:  # noqa: BLE001 - never in the way of the exit it was asked for
                    print(f"prov4torch: the run could not be concluded at os._exit: {exc}", file=sys.stderr)
                with contextlib.suppress(Exception):
                    sys.stderr.flush()  # our summary; the script's stdout stays as os._exit leaves it
            original(status)

        os._exit = _exit

        def undo() -> None:
            if os._exit is _exit:
                os._exit = original

        return undo

    return install


def _execute(
    script: Path, target: str, args: list[str], module: bool, run: Run | None,
    hard_exit: Callable[[int], int] | None = None,
) -> tuple[str, int, int | None, BaseException | None]:
    """Run the script as python would; (status, exit code, signal, exception)."""
    from .patches import Autolog

    autolog = Autolog(run) if run is not None else None
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [str(script), *args]
    if module:
        sys.path.insert(0, os.getcwd())
    elif sys.path:
        sys.path[0] = str(script.parent)
    else:
        sys.path.insert(0, str(script.parent))
    status, code = "FINISHED", 0
    error: BaseException | None = None
    signal_number: int | None = None
    try:
        if run is not None:
            run.started()  # a signal that arrived while the run started acts here, where the script's would
        if autolog is not None:
            hooks: list[tuple[Callable[[Run], Callable[[], None]], str]] = [(patch_spawn, "spawned processes")]
            if hard_exit is not None:
                hooks.append((_hard_exit_hook(hard_exit), "os._exit"))
            autolog.install(args, extra=hooks)
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or exc.code == 0:
            code = 0
        elif isinstance(exc.code, int):
            code, status = exc.code, "FAILED"
        else:
            print(exc.code, file=sys.stderr)
            code, status, error = 1, "FAILED", exc
    except KeyboardInterrupt as exc:  # python prints its traceback too, then ends by the signal
        _script_traceback(exc, script)
        status, code, signal_number = "KILLED", 128 + signal.SIGINT, signal.SIGINT
    except SignalExit as exc:  # SIGTERM: end the run, let the CLI merge and summarise, then exit as the signal would
        status, code, signal_number = "KILLED", 128 + exc.signum, exc.signum
    except PolicyViolation as exc:
        _script_traceback(exc, script)
        status, code, error = "BLOCKED", 1, exc
    except BaseException as exc:  # noqa: BLE001 - the script's own failure: report it as python would
        _script_traceback(exc, script)
        status, code, error = "FAILED", 1, exc
    finally:
        if autolog is not None:
            autolog.remove()
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            if module:
                sys.path.remove(os.getcwd())
            else:
                sys.path[0] = saved_path0
    return status, code, signal_number, error


def launch(
    target: str,
    args: list[str],
    *,
    nproc: int,
    module: bool = False,
    out_dir: Path | None = None,
    experiment: str | None = None,
    run_id: str | None = None,
    extra_env: dict[str, str] | None = None,
    emitter: LiveEmitter | None = None,
) -> Outcome:
    """Run ``target`` on ``nproc`` local ranks through torch.distributed.run (``finish`` merges the rank files)."""
    resolve_target(target, module)
    run_id = run_id or uuid7()
    root = (out_dir or default_root()).expanduser().resolve()
    experiment = experiment or env.get(env.EXPERIMENT) or "default"
    if emitter is not None:
        import torch

        emitter.send(start_event(run_id, experiment, Path(target).stem, _now(), torch.__version__))
    child_env = {**os.environ, **(extra_env or {}), env.RUN_ID: run_id, env.DIR: str(root), env.EXPERIMENT: experiment}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "prov4torch_cli.worker", *(["-m"] if module else []), target, *args]
    proc = subprocess.Popen(cmd, env=child_env)

    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    run_dir = root / experiment / run_id
    if run_dir.is_dir():
        from ..record.recover import recover

        recover(run_dir)  # ranks that died before end_run: INCOMPLETE, not lost
    if received:
        return Outcome(128 + received[0], run_dir, signal=received[0])
    return Outcome(code if code >= 0 else 128 - code, run_dir)


def finish(outcome: Outcome, *, render_svg: bool = False, policy: str | None = None,
           html_report: bool = False, emitter: LiveEmitter | None = None) -> Outcome:
    """After the script: merge the rank files into ``run.prov.json`` (and any job the script started itself),
    draw ``run.svg`` when asked, sign the merged document when a key is configured, and write ``report.html``
    when asked. Never raises: what could not be done is a note."""
    from ..audit.merge import merge
    from ..evidence.keys import load_signer, signing_key_path
    from .children import nested_jobs

    run_dir = outcome.run_dir
    if run_dir is None or not run_dir.is_dir():
        return outcome
    merged = run_dir / "run.prov.json"
    try:
        report = merge([run_dir], merged)
        outcome.merged = merged
        outcome.rank_files = sorted(run_dir.glob("*.prov.json"))
        missing = report.missing()
        note = f"; ranks missing: {missing}" if missing else ""
        outcome.notes.append(f"exit code {outcome.exit_code}; provenance in {merged}{note}")
        if policy and sum(p.name.startswith("rank-") for p in outcome.rank_files) > 1:
            outcome.notes += _job_findings(merged, policy)
        for job in nested_jobs(run_dir, f"p4t:run/{run_dir.name}/rank/0"):
            merge([job], job / "run.prov.json")
            outcome.notes.append(f"a distributed job the script started: provenance in {job}/run.prov.json")
        if render_svg:
            from ..audit.render import render
            from ..governance.evaluate import judge

            render([merged], run_dir / "run.svg", judge=judge(policy) if policy else None)
            outcome.svg = run_dir / "run.svg"
            outcome.notes.append(f"audit graph in {outcome.svg}")
    except Prov4TorchError as exc:
        outcome.notes.append(f"could not merge or draw the rank files of {run_dir}: {exc}")
        return outcome
    key = signing_key_path()
    if key is not None:
        try:
            outcome.attestation = sign_documents(run_dir, [merged], load_signer(key), run_dir.name)
            outcome.notes.append(f"signed: {outcome.attestation} (check it: prov4torch verify {run_dir})")
        except (OSError, Prov4TorchError) as exc:
            outcome.notes.append(f"could not sign {merged}: {exc}")
    if html_report:
        _write_report(outcome, run_dir, policy)
    if emitter is not None:
        _send_final(outcome, run_dir, emitter)
    return outcome


def _job_findings(merged: Path, policy: str) -> list[str]:
    """The policy's findings on a multi-rank job as a whole. Each rank's gate judged the data that rank attached:
    ranks trained on different data (EU data on one, US data on another, one model by all-reduce) pass each their
    own gate. The merged job is judged here -- after the fact, as ``prov4torch check`` will -- and said; the exit
    code stays the script's (the compute has happened: nothing is enforced now)."""
    from ..governance.evaluate import check

    try:
        report = check([merged], policy)
    except Prov4TorchError as exc:
        return [f"could not judge the merged job against the policy: {exc}"]
    if not report.violations:
        return []
    first = report.violations[0]
    more = f" (and {len(report.violations) - 1} more)" if len(report.violations) > 1 else ""
    return [f"policy finding on the job as a whole, after the fact (each rank's gate judged only its own data): "
            f"{first.rule}: {first.reason}{more}; prov4torch check {merged} --policy ... denies it"]


def _send_final(outcome: Outcome, run_dir: Path, emitter: LiveEmitter) -> None:
    """The run's terminal OpenLineage event(s), from the merged document; then every event on disk too."""
    from ..audit.load import load_graph
    from ..audit.openlineage import Events, validate

    try:
        if outcome.merged is not None:
            for event in Events(load_graph([outcome.merged])).all():
                if event["eventType"] != "START":
                    validate(event)
                    emitter.send(event)
    except (OSError, Prov4TorchError) as exc:
        outcome.notes.append(f"openlineage: no terminal event ({exc})")
    try:
        outcome.notes.append(emitter.close(run_dir))
    except OSError as exc:
        outcome.notes.append(f"openlineage: events not written to {run_dir}: {exc}")


def _write_report(outcome: Outcome, run_dir: Path, policy: str | None) -> None:
    from ..audit.sections import write_report
    from ..evidence.keys import trusted_keys
    from ..governance.evaluate import judge
    from ..governance.policy import load_policy

    try:
        rules = load_policy(policy) if policy else None
        outcome.report = write_report([run_dir], run_dir / "report.html", judge=judge(rules) if rules else None,
                                      policy_name=rules.name if rules else "", keys=trusted_keys()).path
        outcome.notes.append(f"report in {outcome.report}")
    except (OSError, Prov4TorchError) as exc:
        outcome.notes.append(f"could not write the report of {run_dir}: {exc}")


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.UTC).isoformat()
