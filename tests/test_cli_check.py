"""prov4torch check: verdicts, exit codes, text and JSON output, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from prov4torch_cli.app import app
from typer.testing import CliRunner

import prov4torch

runner = CliRunner()


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    eu, us = tmp_path / "eu.bin", tmp_path / "us.bin"
    eu.write_bytes(b"eu")
    us.write_bytes(b"us")
    with prov4torch.start_run(region="eu-west-1", purpose="training") as ok:
        prov4torch.log_dataset(eu, origin_country="FR", jurisdiction="EU", license="MIT")
    with prov4torch.start_run(region="eu-west-1", purpose="training") as bad:
        prov4torch.log_dataset(eu, origin_country="FR", jurisdiction="EU", license="MIT")
        prov4torch.log_dataset(us, origin_country="US", jurisdiction="US", license="MIT")
        prov4torch.log_model(__import__("torch").nn.Linear(1, 1), name="blend")
    return ok.prov_path, bad.prov_path


def test_allow_exits_0_and_says_so(tmp_path: Path):
    ok, _ = two_runs(tmp_path)
    result = runner.invoke(app, ["check", str(ok), "--policy", "default"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ALLOW: policy 'prov4torch-default', 1 file(s), 0 violations"


def test_deny_exits_1_and_names_rule_subject_and_dataset(tmp_path: Path):
    _, bad = two_runs(tmp_path)
    result = runner.invoke(app, ["check", str(bad), "--policy", "default"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("DENY no-eu-us-blend: p4t:model/weights-sha256-")
    assert "combines data from EU + US" in lines[0]
    assert lines[1].strip().startswith("datasets: p4t:dataset/sha256-") and "attribute: p4t:jurisdiction" in lines[1]
    assert lines[-1] == "DENY: policy 'prov4torch-default', 1 file(s), 1 violation"


def test_json_report(tmp_path: Path):
    ok, bad = two_runs(tmp_path)
    result = runner.invoke(app, ["check", str(ok), str(bad), "--policy", "default", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["verdict"] == "deny" and report["policy"] == "prov4torch-default"
    assert report["files"] == [str(ok), str(bad)]
    (v,) = report["violations"]
    assert v["rule"] == "no-eu-us-blend" and len(v["datasets"]) == 2


def test_bad_input_exits_2_with_one_line(tmp_path: Path):
    ok, _ = two_runs(tmp_path)
    notjson = tmp_path / "x.json"
    notjson.write_text("{not json")
    badpolicy = tmp_path / "p.toml"
    badpolicy.write_text('[[rules]]\nid = "r"\ntarget = "model"\ncheck = "teleport"\n')
    for args, message in [
        (["check", str(tmp_path / "missing.json"), "--policy", "default"], "missing.json: no such file"),
        (["check", str(notjson), "--policy", "default"], "x.json: not JSON (line 1, column 2"),
        (["check", str(ok), "--policy", str(badpolicy)], "rule 'r': field 'check': unknown check kind 'teleport'"),
        (["check", str(ok), "--policy", "nonesuch"], "no built-in policy of that name"),
        (["check", str(tmp_path / "empty-dir-that-is-missing"), "--policy", "default"], "no such file"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("Error: ") and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    missing_policy = runner.invoke(app, ["check", str(ok)])
    assert missing_policy.exit_code == 2 and "--policy" in missing_policy.output


def test_every_usage_error_is_one_line_naming_the_command_exit_2(tmp_path):
    """Issue 21: cli.md promises one-line usage errors; typer's own is a five-line box."""
    import subprocess
    import sys

    for args in (["check"], ["check", "x.json"], ["lineage"], ["verify"], ["merge", "a", "--bogus"], ["show"],
                 ["render"], ["validate"], ["keys", "init", "--nope"], ["index", "rebuild"]):
        r = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", *args], capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "--help" in lines[0], (args, r.stderr)
        assert "<list[" not in r.stderr and "╭" not in r.stderr
    helped = subprocess.run([sys.executable, "-m", "prov4torch_cli.app", "check", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "<list[" not in helped.stdout and "{PATH}..." in helped.stdout
