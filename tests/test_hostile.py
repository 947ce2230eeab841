"""Hostile and careless input (issue 14): no traceback, no write outside the output directory, no
fail-open verdict, telemetry that never raises into training, statuses that tell the truth."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch
from conftest import load, rank_activity, run_script

import prov4torch

CLI = [sys.executable, "-m", "prov4torch_cli.app"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# -- writes outside the output directory -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["a/../../escaped", "../up", "/abs", "a//b", ".hidden", "a/./b"])
def test_experiment_names_never_leave_the_output_directory(tmp_path: Path, name: str,
                                                           monkeypatch: pytest.MonkeyPatch):
    before = snapshot(tmp_path)
    with pytest.raises(prov4torch.InvalidValueError, match="experiment"):
        prov4torch.start_run(experiment=name)
    monkeypatch.setenv("PROV4TORCH_EXPERIMENT", name)
    with pytest.raises(prov4torch.InvalidValueError, match="experiment"):
        prov4torch.start_run()
    assert snapshot(tmp_path) == before


def test_prov4torch_run_refuses_an_escaping_experiment(tmp_path: Path):
    (tmp_path / "s.py").write_text("print('ran')\n")
    proc = cli("run", "--experiment", "a/../../escaped", "s.py", cwd=tmp_path)
    one_line_error(proc)
    assert "ran" not in proc.stdout and not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("planted", ["rank-0.metrics.csv", "rank-0.journal.jsonl", "rank-0.packages.txt"])
def test_a_link_planted_at_a_run_file_is_never_written_through(tmp_path: Path, planted: str):
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    run_dir = tmp_path / "runs" / "default" / "planted"
    run_dir.mkdir(parents=True)
    (run_dir / planted).symlink_to(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with prov4torch.start_run(run_id="planted") as run:
                prov4torch.log_metric("loss", 1.0)
            run.close("FINISHED")
        except prov4torch.Prov4TorchError:
            pass  # refusing to start is fine; writing through is not
        time.sleep(0.3)  # the context thread writes the package list
    assert target.read_text() == "precious\n"


def test_links_planted_at_models_and_lineage_are_not_written_through(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "runs"
    (root / "default" / "r").mkdir(parents=True)
    (root / "default" / "r" / "models").symlink_to(outside)
    (root / ".lineage").symlink_to(outside)
    with pytest.warns(RuntimeWarning):
        with prov4torch.start_run(run_id="r") as run:
            mv = prov4torch.log_model(torch.nn.Linear(2, 2), name="m")
    assert list(outside.iterdir()) == []
    assert run.status == "FINISHED" and mv.id.startswith("p4t:model/weights-sha256-")
    (gen,) = [g for g in load(run.prov_path)["wasGeneratedBy"].values() if g["prov:entity"] == mv.id]
    assert "link" in gen["p4t:saveError"]


def test_every_file_of_a_run_has_the_same_mode(tmp_path: Path):
    with prov4torch.start_run() as run:
        prov4torch.log_metric("loss", 1.0)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.dir.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes


# -- bad values at the API ------------------------------------------------------------------------------

class Nasty:
    def __float__(self) -> float:
        raise ZeroDivisionError("boom")

    def __str__(self) -> str:
        raise KeyError("no str")

    def __len__(self) -> int:
        raise RuntimeError("no len")


@pytest.mark.parametrize(("call", "match"), [
    (lambda: prov4torch.log_metric("m", 1.0, timestamp=time.time() * 1000), "milliseconds"),
    (lambda: prov4torch.log_metric("m", 1.0, timestamp=1e12), "outside 1970..2200"),
    (lambda: prov4torch.log_metric("m", 1.0, timestamp=-1e12), "outside 1970..2200"),
    (lambda: prov4torch.log_metric("m", 10**400), "too large"),
    (lambda: prov4torch.log_metric("m", Nasty()), "cannot convert"),
    (lambda: prov4torch.log_param("p", torch.ones(2)), "one number"),
    (lambda: prov4torch.log_param("p", Nasty()), "cannot turn"),
    (lambda: prov4torch.set_tag("t", Nasty()), "cannot turn"),
    (lambda: prov4torch.log_metric("system/cpu/percent", 1.0, context="system"), "reserved"),
    (lambda: prov4torch.log_dataset(Nasty(), name="n", dataset_id="nasty"), None),
])
def test_bad_values_raise_our_errors_and_the_run_goes_on(call, match):
    with prov4torch.start_run() as run:
        if match is None:
            call()  # accepted: a dataset whose __len__ fails has no length, that is all
        else:
            with pytest.raises(prov4torch.InvalidValueError, match=match):
                call()
        prov4torch.log_metric("still", 1.0)
    assert run.status == "FINISHED"
    prov4torch.recover(run.dir)  # the journal stays recoverable


@pytest.mark.parametrize("kwargs", [
    {"out_dir": 123}, {"policy": 123}, {"bogus": 1}, {"tags": [1, 2]}, {"interval_s": float("nan")},
    {"interval_s": float("inf")}, {"system_metrics": "yes"}, {"region": 5}, {"run_id": ""},
    {"tags": {"bad name!": 1}}, {"policy": "no-such-policy"},
])
def test_a_failed_start_run_raises_our_error_and_leaves_nothing_behind(tmp_path: Path, kwargs: dict):
    before = snapshot(tmp_path)
    with pytest.raises(prov4torch.Prov4TorchError):
        prov4torch.start_run(**kwargs)
    assert snapshot(tmp_path) == before and prov4torch.active_run() is None


def test_a_user_metric_named_like_a_sampler_series_does_not_merge_into_it():
    with prov4torch.start_run(system_metrics=True, interval_s=0.05) as run:
        prov4torch.log_metric("system/cpu/percent", 123.0)  # context "training": its own series
        time.sleep(0.2)
    doc = load(run.prov_path)
    series = {(e["p4t:context"], e["p4t:name"]): e for e in doc["entity"].values() if e.get("p4t:context")}
    assert series[("training", "system/cpu/percent")]["p4t:count"]["$"] == "1"
    assert ("system", "system/cpu/percent") in series


# -- the CLI on hostile files ------------------------------------------------------------------------------

READERS = [["validate"], ["show"], ["check", "--policy", "default"], ["merge", "-o", "OUT/m.json"],
           ["render", "-o", "OUT/r.svg"], ["lineage", "FILE", "x"]]


def hostile_files(d: Path) -> dict[str, Path]:
    files = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "bigint": '{"entity": {"ex:e": {"ex:v": ' + "9" * 5000 + '}}, "prefix": {"ex": "https://e/"}}',
        "string-section": '{"entity": "oops", "prefix": {}}',
        "nan": '{"entity": {"ex:e": {"ex:v": NaN}}, "prefix": {"ex": "https://e/"}}',
        "not-json": "{{{",
        "array": "[1, 2]",
        "binary": "\udcff",
    }
    out = {}
    for name, text in files.items():
        p = d / f"{name}.json"
        p.write_bytes(text.encode("utf-8", "surrogateescape"))
        out[name] = p
    return out


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
def test_every_reading_command_refuses_hostile_files_in_one_line(tmp_path: Path, command: list[str]):
    (tmp_path / "OUT").mkdir()
    for name, f in hostile_files(tmp_path).items():
        args = [a.replace("OUT", str(tmp_path / "OUT")) for a in command]
        args = ["lineage", str(f), "x"] if args[0] == "lineage" else [*args, str(f)]
        proc = cli(*args)
        expected = 1 if command[0] == "validate" else 2
        line = one_line_error(proc, expected) if command[0] != "validate" else None
        if command[0] == "validate":
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, (name, proc.stderr)
        else:
            assert str(f) in line, (name, line)


def test_check_never_allows_a_document_it_could_not_read(tmp_path: Path):
    doc = {"prefix": {"p4t": prov4torch.NAMESPACE}, "entity": [{"p4t:dataset/x": {"p4t:jurisdiction": "US"}}]}
    f = tmp_path / "list.json"
    f.write_text(json.dumps(doc))
    line = one_line_error(cli("check", str(f), "--policy", "default"))
    assert "section 'entity'" in line and "ALLOW" not in line
    f.write_text(json.dumps({"entity": {"ex:e": {"ex:v": {"type": "xsd:string"}}}, "prefix": {"ex": "https://e/"}}))
    one_line_error(cli("check", str(f), "--policy", "default"))


def test_output_paths_and_options_are_checked_before_any_work(tmp_path: Path):
    with prov4torch.start_run() as run:
        prov4torch.log_metric("loss", 1.0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    for args in (["merge", str(run.dir), "-o", str(tmp_path)],
                 ["render", str(run.prov_path), "-o", str(tmp_path / "d") + "/"],
                 ["render", str(run.prov_path), "-o", str(tmp_path / "x.svg"), "--timeout", "nan"],
                 ["render", str(run.prov_path), "-o", str(tmp_path / "x.svg"), "--timeout", "-1"],
                 ["render", str(run.prov_path), "-o", str(tmp_path / "x.svg"), "--engine", "/bin/sh"],
                 ["merge", str(run.dir), "-o", str(tmp_path / "file.txt" / "m.json")]):
        (tmp_path / "file.txt").write_text("x")
        one_line_error(cli(*args))
    if os.geteuid() != 0:  # root writes anywhere
        one_line_error(cli("merge", str(run.dir), "-o", str(locked / "m.json")))
    locked.chmod(0o700)


def test_a_policy_nested_too_deeply_is_one_line(tmp_path: Path):
    pol = tmp_path / "deep.toml"
    pol.write_text("a = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with prov4torch.start_run() as run:
        prov4torch.log_metric("loss", 1.0)
    assert "nested too deeply" in one_line_error(cli("check", str(run.prov_path), "--policy", str(pol)))


# -- render and show on hostile data ------------------------------------------------------------------------

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")


@needs_dot
def test_render_gives_valid_xml_for_control_characters_nul_and_huge_labels(tmp_path: Path):
    doc = {"prefix": {"ex": "https://example.org/"},
           "entity": {"ex:e1": {"prov:label": "bell\x07 esc\x1b[31m nul\x00 tab\t"},
                      "ex:e2": {"prov:label": "x" * 20_000},
                      "ex:e3": {"prov:label": "lone \ud800 surrogate <&>\""}},
           "activity": {"ex:a": {}},
           "used": {"_:u1": {"prov:activity": "ex:a", "prov:entity": "ex:e1"},
                    "_:u2": {"prov:activity": "ex:a", "prov:entity": "ex:e2"},
                    "_:u3": {"prov:activity": "ex:a", "prov:entity": "ex:e3"}}}
    f = tmp_path / "nasty.json"
    f.write_text(json.dumps(doc))  # \u escapes: NUL, ESC and the lone surrogate stay in the JSON text
    out = tmp_path / "nasty.svg"
    proc = cli("render", str(f), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    svg = ElementTree.parse(out).getroot()
    texts = "".join(t.text or "" for t in svg.iter() if t.tag.endswith("text"))
    assert "\x1b" not in texts and "\x00" not in texts and "…" in texts and "bell" in texts


@needs_dot
def test_render_draws_relations_whose_endpoints_are_not_declared(tmp_path: Path):
    f = tmp_path / "started.json"
    f.write_text(json.dumps({"prefix": {"ex": "https://example.org/"},
                             "wasStartedBy": {"_:s": {"prov:activity": "ex:run", "prov:trigger": "ex:cron"}}}))
    proc = cli("render", str(f), "-o", str(tmp_path / "s.svg"))
    assert proc.returncode == 0, proc.stderr
    assert "2 nodes, 1 edges" in proc.stdout
    assert "not declared" in (tmp_path / "s.svg").read_text()


def test_show_strips_terminal_escape_sequences(tmp_path: Path):
    evil = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred"
    with prov4torch.start_run(run_name="ok", region="eu\x1b[31m") as run:
        prov4torch.log_param("p", evil)
        prov4torch.log_dataset(__file__, name="d")
    for args in (["show", str(run.prov_path)], ["show", str(run.prov_path), "--json"],
                 ["lineage", str(run.prov_path), run.activity]):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout


# -- telemetry never raises into training ---------------------------------------------------------------------

def _delete_while_written(path: Path) -> None:
    """`rm -rf` of a directory the run's writer thread may be appending to: a file it creates
    between the listing and the `rmdir` is deleted on the next pass, as `rm -rf` run again would."""
    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
    raise AssertionError(f"{path} could not be deleted")


def test_a_deleted_run_directory_warns_and_training_goes_on(tmp_path: Path):
    with pytest.warns(RuntimeWarning):
        with prov4torch.start_run() as run:
            prov4torch.log_metric("loss", 1.0)
            prov4torch.flush()
            _delete_while_written(run.dir)
            mv = prov4torch.log_model(torch.nn.Linear(2, 2), name="m")
            for i in range(100):
                prov4torch.log_metric("loss", float(i))
    assert run.status == "FINISHED" and mv.id.startswith("p4t:model/")


FULL_DISK = """
import sys, torch, prov4torch
run = prov4torch.start_run(out_dir=sys.argv[1], system_metrics=False, energy=False)
model = torch.nn.Linear(64, 64)
for step in range(4000):
    prov4torch.log_metric("loss", 1.0 / (step + 1), step=step)
    prov4torch.log_metric("lr", 0.1, step=step)
    if step % 400 == 0:
        prov4torch.log_model(model, name="m")
prov4torch.end_run()
print("TRAINED", run.status)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs")
def test_a_full_disk_never_stops_training_and_the_run_recovers(tmp_path: Path):
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = run_script(tmp_path, FULL_DISK, str(disk / "runs"))
        assert proc.returncode == 0 and "TRAINED FINISHED" in proc.stdout, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "prov4torch" in proc.stderr  # warned
        (run_dir,) = [p.parent for p in disk.glob("runs/*/*/rank-0.journal.jsonl")]
        journal = (run_dir / "rank-0.journal.jsonl").read_bytes()
        keep = tmp_path / "kept"
        shutil.copytree(run_dir, keep)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    (keep / "rank-0.prov.json").unlink(missing_ok=True)
    (result,) = prov4torch.recover(keep)
    assert result.rank_file.exists() and journal


# -- statuses tell the truth ------------------------------------------------------------------------------------

def test_a_sigterm_handler_installed_after_start_run_is_chained(tmp_path: Path):
    proc = run_script(tmp_path, """
        import os, signal, sys, prov4torch
        run = prov4torch.start_run(system_metrics=False, energy=False)
        got = []
        signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
        assert signal.getsignal(signal.SIGTERM) is not None
        os.kill(os.getpid(), signal.SIGTERM)
        print("handler ran", got == [signal.SIGTERM])
        sys.exit(0)
    """)
    assert proc.returncode == 0 and "handler ran True" in proc.stdout, proc.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/rank-0.prov.json")]
    act = rank_activity(load(run_dir / "rank-0.prov.json"))
    assert act["p4t:status"] == "KILLED" and act["p4t:signal"] == "SIGTERM"


def test_end_run_failed_inside_prov4torch_run_is_honoured(tmp_path: Path):
    (tmp_path / "s.py").write_text("import prov4torch\nprov4torch.start_run()\nprov4torch.end_run('FAILED')\n")
    proc = cli("run", "s.py", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/rank-0.prov.json")] or \
        [p.parent for p in Path(os.environ["PROV4TORCH_DIR"]).glob("*/*/rank-0.prov.json")]
    assert rank_activity(load(run_dir / "rank-0.prov.json"))["p4t:status"] == "FAILED"


def test_prov4torch_run_on_sigterm_merges_summarises_and_exits_as_the_signal_would(tmp_path: Path):
    (tmp_path / "s.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([*CLI, "run", "s.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    assert "provenance in" in err and "Traceback" not in err
    (run_dir,) = [p.parent for p in Path(os.environ["PROV4TORCH_DIR"]).glob("*/*/run.prov.json")]
    act = rank_activity(load(run_dir / "rank-0.prov.json"))
    assert act["p4t:status"] == "KILLED" and act["p4t:signal"] == "SIGTERM"


def test_recover_and_merge_of_a_killed_run_with_hostile_names(tmp_path: Path):
    body = textwrap.dedent("""
        import os, signal, prov4torch
        prov4torch.start_run(system_metrics=False, energy=False, run_name="name with \\x1b[31m escape")
        prov4torch.log_param("weird.key-/x", "\\u2028line")
        prov4torch.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = run_script(tmp_path, body)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/rank-0.journal.jsonl")]
    assert cli("recover", str(run_dir)).returncode == 0
    assert cli("merge", str(run_dir), "-o", str(tmp_path / "m.prov.json")).returncode == 0
