"""Training in child processes, recorded as ranks of the same run.

* ``torch.multiprocessing.spawn`` (and ``start_processes``): each spawned function runs under a run of its
  own rank (the process index), same run id and output directory, with the same zero-code capture; the
  process that spawned them records as the job's launcher (``launcher.*`` files, ``p4t:run/<id>/launcher``),
  so its rank-0 files never collide with the spawned rank 0.
* A launcher that starts the script again as new Python processes (Lightning's DDP launcher, for one):
  the recorded script's environment carries a ``sitecustomize`` (a file in the run directory, first on
  ``PYTHONPATH``; any other ``sitecustomize`` still runs after it) that starts recording in a child that
  runs the same script with a ``RANK``/``LOCAL_RANK`` other than 0 (rank 0 is the process already recorded).
* A distributed job the script starts on *another* script (``torchrun`` / ``torch.distributed.run`` called
  from the script, in-process or as a command): each of its workers (a Python process whose distributed
  settings differ from the recording process's) records as a rank of a job of its own, one run directory
  for the job (its id derived from the parent's run id and the job's rendezvous settings, so every rank finds
  it without talking to the others), each rank ``wasInformedBy`` the recording process.

Everything a child needs arrives in ``PROV4TORCH_*`` variables. A child that cannot be recorded warns in
one line, and the parent's record counts the ranks present when the job is merged.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import env
from ..patching import Patches
from ..record.run import Run
from ..safefs import first_json_line
from ..warn import warn
from .scope import warn_unrecorded

CHILD_SCRIPT = env.CHILD_SCRIPT

SITECUSTOMIZE = '''"""Written by prov4torch: record this process as a rank of the run that started it,
then run any other sitecustomize on sys.path."""
import os as _os
import sys as _sys

if _os.environ.get("PROV4TORCH_CHILD_SCRIPT"):
    try:
        from prov4torch.autolog.children import start_child as _start
        _start()
    except Exception as _exc:  # recording never stops the child
        print(f"prov4torch: this child process is not recorded: {_exc}", file=_sys.stderr)
_here = _os.path.dirname(_os.path.abspath(__file__))
import importlib.machinery as _m
_spec = _m.PathFinder.find_spec("sitecustomize", [p for p in _sys.path if _os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _module = __import__("importlib.util").util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
'''


DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
             "TORCHELASTIC_RESTART_COUNT", "GROUP_RANK")


def _dist_settings() -> str:
    return ";".join(f"{k}={os.environ.get(k, '')}" for k in DIST_VARS)


def _child_env(run: Run) -> dict[str, str]:
    settings = {env.RUN_ID: run.run_id, env.DIR: str(run.root.resolve()), env.EXPERIMENT: run.experiment,
                env.PARENT: run.activity, env.PARENT_DIST: _dist_settings(), env.PARENT_STEM: run.stem}
    for name, value in ((env.REGION, run.region), (env.PURPOSE, run.purpose), (env.INTENDED_USE, run.intended_use),
                        (env.POLICY, run.policy_source()), (env.POLICY_MODE, run.policy_mode())):
        if value:
            settings[name] = str(value)
    return settings


def prepare_children(run: Run, script: Path) -> Callable[[], None]:
    """Make Python children that run ``script`` again record themselves (see the module docstring)."""
    folder = run.dir / ".children"
    # (the policy too: a script's start_run may set it later, ``Run.adopt_policy``)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", CHILD_SCRIPT, env.POLICY, env.POLICY_MODE, *_child_env(run))}
    try:
        folder.mkdir(exist_ok=True)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    except OSError:
        return lambda: None
    os.environ.update(_child_env(run))
    os.environ[CHILD_SCRIPT] = str(script.resolve())
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), saved["PYTHONPATH"]) if p)

    def undo() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    return undo


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    try:  # an exited child not yet reaped by its parent is a zombie: gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def await_children(run_dir: Path, timeout_s: float = 60.0) -> list[str]:
    """Wait (at most ``timeout_s``) for child ranks on this host still writing their record; those still open.

    A child started by the script (a DDP launcher's rank 1, say) may outlive the script's return by the time
    it takes to write its document; merging before it has would leave it out.
    """
    import socket
    import time

    from ..record.recover import JOURNAL_SUFFIX, journals

    host, me = socket.gethostname(), os.getpid()
    pending: dict[Path, int] = {}
    for journal in journals(run_dir):
        prov = journal.with_name(journal.name[: -len(JOURNAL_SUFFIX)] + ".prov.json")
        start = first_json_line(journal)
        pid = start.get("pid") if isinstance(start, dict) else None
        if not prov.exists() and isinstance(pid, int) and pid != me and start.get("host") == host:
            pending[prov] = pid
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = {p: pid for p, pid in pending.items() if not p.exists() and _alive(pid)}
        if pending:
            time.sleep(0.05)
    return sorted(p.name for p in pending)


def nested_jobs(run_dir: Path, parent_activity: str) -> list[Path]:
    """Run directories beside ``run_dir`` holding a job whose ranks the activity ``parent_activity`` started."""
    found = []
    for journal in sorted(run_dir.parent.glob("*/rank-0*.journal.jsonl")):
        if journal.parent == run_dir:
            continue
        start = first_json_line(journal)
        if isinstance(start, dict) and start.get("launched_by") == parent_activity and journal.parent not in found:
            found.append(journal.parent)
    return found


def _rank_from_env() -> int | None:
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def _multiprocessing_child() -> bool:
    """Whether this process is a ``multiprocessing`` spawn child or forkserver (not yet knowing what it runs)."""
    code = " ".join(getattr(sys, "orig_argv", ()))
    return "multiprocessing.spawn import spawn_main" in code or "multiprocessing.forkserver import main" in code


def _record_helper(stem: str) -> Run:
    """A spawned helper process: gated by the run's policy, its data uses and decisions for its rank's record
    (``record.helpers``); what it forks (a forkserver's children) helps the same rank."""
    import torch.utils.data  # noqa: F401 - the data hooks need it; the spawned function will import it anyway

    from ..record.run import ACTIVE

    run = Run(managed=True, defer_signals=False, script=None, helper_of=stem, system_metrics=False, energy=False)
    ACTIVE.run = run
    from .frameworks import install_framework_hooks

    try:  # files it reads as data (--data, numpy/pandas readers) are gated and recorded as in the rank
        remove = install_framework_hooks(run)
        run.on_end(lambda _run: remove())
    except Exception as exc:  # noqa: BLE001 - capture that cannot install never stops the script
        warn_unrecorded("the data files a helper process reads", exc)
    return run


def start_child() -> None:
    """In a child process (from sitecustomize): record it if it is a rank other than 0 of the recorded script, or
    a rank of a distributed job the recorded script started on another script; a helper of its rank if it is a
    ``multiprocessing`` child."""
    script = os.environ.get(CHILD_SCRIPT)
    stem = os.environ.get(env.PARENT_STEM)
    if script and stem and _multiprocessing_child():
        _record_helper(stem)
        return
    argv0 = sys.argv[0] if sys.argv else ""
    rank = _rank_from_env()
    if not script or not argv0 or argv0 in ("-c", "-m") or rank is None or not os.path.isfile(argv0):
        return
    if os.path.abspath(argv0) == script:
        if rank:  # rank 0 of the recorded script is the recording process itself
            os.environ.setdefault("RANK", str(rank))
            _record_child(Path(script), sys.argv[1:])
        return
    if _dist_settings() == os.environ.get(env.PARENT_DIST) or "WORLD_SIZE" not in os.environ:
        return  # a helper the script runs, with the script's own settings: not a rank of a new job
    import uuid

    job = uuid.uuid5(uuid.NAMESPACE_URL, "|".join(
        [os.environ.get(env.RUN_ID, ""), os.environ.get("TORCHELASTIC_RUN_ID", ""),
         os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""), os.path.abspath(argv0)]))
    os.environ[env.RUN_ID] = str(job)
    os.environ.setdefault("RANK", str(rank))
    parent = os.environ.get(env.PARENT)
    if parent:
        os.environ[env.LAUNCHER] = parent
    _record_child(Path(argv0).resolve(), sys.argv[1:])


def _record_child(script: Path | None, argv: list[str]) -> Run:
    import torch.utils.data  # noqa: F401 - the script will import it anyway; its data hooks need it now

    from ..record.run import ACTIVE
    from .patches import Autolog

    helper = ACTIVE.run
    if isinstance(helper, Run) and helper.helper_of is not None:  # a spawned process that turns out to be a rank
        helper.discard_helper()
    run = Run(managed=True, defer_signals=False, script=script)
    ACTIVE.run = run
    autolog = Autolog(run)
    autolog.install(argv, extra=((patch_spawn, "spawned processes"),))
    run.on_end(lambda _run: autolog.remove())
    return run


def _spawned(fn: Callable[..., Any], settings: dict[str, str], nprocs: int, index: int, *args: Any) -> Any:
    """A process started by torch.multiprocessing.spawn: its function runs under a run of rank ``index``."""
    os.environ.update(settings)
    os.environ.update({"RANK": str(index), "LOCAL_RANK": str(index), "WORLD_SIZE": str(nprocs)})
    os.environ.pop(CHILD_SCRIPT, None)
    try:
        run = _record_child(None, [])
    except Exception as exc:  # noqa: BLE001 - a child that cannot be recorded still trains
        warn(f"prov4torch: spawned process {index} is not recorded: {exc}")
        return fn(index, *args)
    try:
        result = fn(index, *args)
    except BaseException as exc:
        run.close_from_exception(exc)
        raise
    run.close("FINISHED")
    return result


def patch_spawn(run: Run) -> Callable[[], None]:
    """Wrap ``torch.multiprocessing.start_processes`` (what ``spawn`` calls) for ``run``; the undo."""
    import importlib

    import torch.multiprocessing

    spawn_module = importlib.import_module("torch.multiprocessing.spawn")  # the module, not the function
    original: Callable[..., Any] = spawn_module.start_processes

    @functools.wraps(original)
    def start_processes(fn: Callable[..., Any], args: tuple[Any, ...] = (), nprocs: int = 1, *a: Any,
                        **k: Any) -> Any:
        if run.ended or run.disabled:
            return original(fn, args, nprocs, *a, **k)
        run.become_launcher()
        settings = {**_child_env(run), env.LAUNCHER: f"p4t:run/{run.run_id}/launcher"}
        wrapped = functools.partial(_spawned, fn, settings, nprocs)
        return original(wrapped, args, nprocs, *a, **k)

    owners = [spawn_module, *([torch.multiprocessing] if getattr(torch.multiprocessing, "start_processes", None)
                              is original else [])]
    patches = Patches()
    for owner in owners:  # spawn() calls the module's; scripts may call torch.multiprocessing.start_processes
        patches.replace(owner, "start_processes", lambda _original: start_processes)
    return patches.restore
