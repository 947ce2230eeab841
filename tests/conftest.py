from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from prov4torch.record.run import ACTIVE

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "prov-corpus"


@pytest.fixture(autouse=True)
def every_document_passes_independent_checks(request: pytest.FixtureRequest, tmp_path: Path):
    """After each test, every *.prov.json it left is checked against the W3C PROV-JSON schema and
    PROV-CONSTRAINTS (tests/provcheck.py), unless the test wrote broken documents on purpose."""
    yield
    if request.node.get_closest_marker("foreign_prov"):
        return
    from provcheck import problems

    for path in sorted(tmp_path.rglob("*.prov.json")):
        if path.name.startswith(".") or path.is_symlink() or not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            pytest.fail(f"{path} is not JSON: {exc}")
        found = problems(doc)
        assert not found, f"{path.relative_to(tmp_path)}: " + "; ".join(found[:5])


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test writes under tmp_path, with no PROV4TORCH_* or torchrun variables set."""
    for name in list(os.environ):
        if name.startswith("PROV4TORCH_") or name in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROV4TORCH_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # signing keys: none unless a test makes one
    monkeypatch.setenv("PROV4TORCH_FLUSH_INTERVAL", "0.2")
    # samplers are tested in test_samplers.py; elsewhere they would only add seconds
    monkeypatch.setenv("PROV4TORCH_SYSTEM_METRICS", "0")
    monkeypatch.setenv("PROV4TORCH_ENERGY", "0")
    monkeypatch.chdir(tmp_path)
    hook, handlers = sys.excepthook, {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    run = ACTIVE.run
    if run is not None and not run.ended:
        run.close("FINISHED")
    ACTIVE.run = None
    assert sys.excepthook is hook, "a run left its excepthook installed"
    for s, h in handlers.items():
        assert signal.getsignal(s) == h, f"a run left its {signal.Signals(s).name} handler installed"


@pytest.fixture(autouse=True)
def no_declared_tags():
    """Tags declared by one test (load_tags, declare_checkpoint) never leak into the next."""
    from prov4torch.governance.declared import DECLARED

    DECLARED.clear()
    yield
    DECLARED.clear()


def read_prov(path: Path):
    """Read a PROV-JSON file with the prov package, failing on any warning it raises."""
    from prov.model import ProvDocument

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ProvDocument.deserialize(source=str(path), format="json")


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def role(relation: dict[str, Any]) -> str | None:
    """A relation's ``prov:role`` (an ``xsd:QName``) as its prefixed name."""
    r = relation.get("prov:role")
    assert r is None or (isinstance(r, dict) and r.get("type") == "xsd:QName"), f"role is not a QName: {r!r}"
    return r["$"] if r else None


def types(record: dict[str, Any]) -> set[str]:
    """A record's ``prov:type`` values (one or a list)."""
    t = record.get("prov:type")
    items = t if isinstance(t, list) else [t] if t is not None else []
    return {i["$"] if isinstance(i, dict) else str(i) for i in items}


def rank_activity(doc: dict[str, Any]) -> dict[str, Any]:
    (act,) = [a for a in doc["activity"].values() if a.get("prov:type", {}).get("$") == "mls:Run"]
    return act


def run_script(tmp_path: Path, body: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a Python script in a subprocess with this test's environment."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=tmp_path)


def only_run_dir(tmp_path: Path) -> Path:
    dirs = [p.parent for p in (tmp_path / "runs").glob("*/*/rank-0.journal.jsonl")]
    assert len(dirs) == 1, dirs
    return dirs[0]


# -- a real PostgreSQL server, started once per test run (issue 29) ------------------------------------------

def _pg_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


@pytest.fixture(scope="session")
def postgres_server():
    """Debian's PostgreSQL: ``initdb`` into a temporary directory, run as the unprivileged ``postgres`` user when
    the tests run as root (PostgreSQL refuses root), on a Unix socket only; stopped at the end. Skipped where it
    is not installed -- except under CI, where that is a failure (bootstrap installs it)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("PostgreSQL is not installed")
    import shutil
    import tempfile

    # not under pytest's tmp dir: its parents are private to the test user, and the server's user must reach it
    # (and a Unix socket's path must be short)
    base = Path(tempfile.mkdtemp(prefix="p4t-pg-"))
    base.chmod(0o777)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, log = base / "data", base / "server.log"
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, timeout=120)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-k {base} -c listen_addresses='' -F -c max_connections=200", "start"], check=True,
                   capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@/postgres?host={base}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's server, for one test."""
    import re
    import uuid

    import psycopg

    name = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_server, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.replace("/postgres?", f"/{name}?")


# -- a real S3-compatible server (moto, in its own virtual environment: it conflicts with s3fs), once per run ---

MOTO = ROOT / ".venv-moto" / "bin" / "moto_server"


@pytest.fixture(scope="session")
def s3_server():
    """``moto_server`` on a free localhost port (bootstrap installs it into .venv-moto); skipped where it is not
    installed, except under CI. Yields the endpoint URL; the server is stopped at the end."""
    import socket
    import time
    import urllib.request

    server = os.environ.get("PROV4TORCH_TEST_MOTO") or str(MOTO)
    if not os.path.exists(server):
        if os.environ.get("CI"):
            pytest.fail(f"{server} is missing (scripts/bootstrap.sh installs moto[server] into .venv-moto)")
        pytest.skip("moto_server is not installed (scripts/bootstrap.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the session's S3 server, with the endpoint and credentials in the environment (for
    subprocesses) and in fsspec's configuration (for this one). Returns ``s3://<bucket>``."""
    import re
    import uuid

    import fsspec

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_server})
    bucket = (re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8])
    fs = fsspec.filesystem("s3", endpoint_url=s3_server, skip_instance_cache=True)
    fs.mkdir(bucket)
    return f"s3://{bucket}"
