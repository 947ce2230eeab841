"""The lineage index on two backends (issue 29, items 1-2): the store's SQLite file and a shared PostgreSQL
database -- a real server, started once per test run (``postgres_server`` in conftest) -- one schema with a
version table and migrations, lineage as one recursive SQL query on both, ``index rebuild`` filling either from
the store's PROV files, concurrent writers losing nothing, and a dead database never stopping a run."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import load, role
from test_governance import pretrain

import prov4torch
from prov4torch.governance.index import SCHEMA_VERSION, LineageIndex

CLI = [sys.executable, "-m", "prov4torch_cli.app"]


def chain_cards(n: int) -> list[dict]:
    """Cards of an n-model fine-tune chain on one dataset, as runs write them: each states its own derivation and
    those inherited from its base."""
    cards, inherited = [], [["p4t:model/m0", "p4t:dataset/d0"]]
    for i in range(n):
        own = [f"p4t:model/m{i}", f"p4t:model/m{i - 1}"] if i else inherited[0]
        derivations = sorted({tuple(own), *map(tuple, inherited)})
        inherited = [list(d) for d in derivations]
        cards.append({"model": f"p4t:model/m{i}", "sha256": f"{i:064x}", "keys": [f"{i + 10**6:064x}"],
                      "derivations": [list(d) for d in derivations], "upstream": {}, "governance": {}})
    return cards


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> LineageIndex:
    if request.param == "sqlite":
        return LineageIndex(tmp_path / "store", url="")
    return LineageIndex(tmp_path / "store", url=request.getfixturevalue("postgres_url"))


def test_cards_are_found_by_every_digest_and_lineage_is_one_recursive_query(index: LineageIndex):
    cards = chain_cards(50)
    for card in cards:
        index.put(card)
    assert index.get("f" * 64, f"{7:064x}")["model"] == "p4t:model/m7"  # the first digest found
    assert index.get(f"{7 + 10**6:064x}")["model"] == "p4t:model/m7"  # by its weights digest too
    assert index.get("e" * 64) is None
    up = index.upstream("p4t:model/m49")  # depth 50
    assert up == sorted(["p4t:dataset/d0", *(f"p4t:model/m{i}" for i in range(49))])
    assert index.upstream(f"{49:064x}") == up  # by a digest of the checkpoint
    assert index.upstream("p4t:model/m0") == ["p4t:dataset/d0"]
    assert index.counts() == (50, 50)


def test_a_cycle_in_a_foreign_index_ends_the_query(index: LineageIndex):
    index.put({"model": "a", "sha256": "1" * 64, "derivations": [["a", "b"], ["b", "a"]]})
    assert index.upstream("a") == ["a", "b"]


def test_the_schema_is_versioned_and_an_old_sqlite_index_is_migrated(tmp_path: Path):
    """An index written before the schema had a version (no envelope column, no derivations table) is taken to
    the current version in place; its cards keep working and their derivations are queryable."""
    path = tmp_path / "store" / ".lineage" / "index.sqlite"
    path.parent.mkdir(parents=True)
    card = chain_cards(3)[2]
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE cards (digest TEXT PRIMARY KEY, model TEXT, card TEXT)")
        con.execute("INSERT INTO cards VALUES (?, ?, ?)", (card["sha256"], card["model"], json.dumps(card)))
    index = LineageIndex(tmp_path / "store", url="")
    assert index.upstream(card["model"]) == ["p4t:dataset/d0", "p4t:model/m0", "p4t:model/m1"]
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT MAX(version) FROM p4t_schema").fetchone()[0] == SCHEMA_VERSION
        assert "envelope" in {r[1] for r in con.execute("PRAGMA table_info(cards)")}
    index.put(chain_cards(4)[3], {"payload": "x"})  # and it takes new cards with envelopes
    assert index.get(f"{3:064x}")["model"] == "p4t:model/m3"


WRITER = """
import sys
from pathlib import Path
from prov4torch.governance.index import LineageIndex
url, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
index = LineageIndex(Path(sys.argv[4]), url=url)
for i in range(n):
    model = f"p4t:model/w{me}-{i}"
    index.put({"model": model, "sha256": f"{me:08x}{i:056x}", "derivations": [[model, f"p4t:dataset/d{me}"]]})
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sixteen_concurrent_writers_lose_nothing(tmp_path: Path, backend: str, request: pytest.FixtureRequest):
    """16 processes (ranks saving checkpoints every few steps) each commit 100 cards to one fresh index at once
    -- the schema made by whichever comes first: every card is there afterwards, no writer failed."""
    url = "" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    (tmp_path / "w.py").write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, "w.py", url, str(me), "100", str(tmp_path / "store")], cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True) for me in range(16)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    index = LineageIndex(tmp_path / "store", url=url)
    assert index.counts() == (1600, 1600)
    assert index.upstream("p4t:model/w15-99") == ["p4t:dataset/d15"]


def test_a_shared_postgres_index_carries_lineage_between_stores(tmp_path: Path, postgres_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """Two teams' stores, no sidecars, one PostgreSQL index: a checkpoint trained in store A is fine-tuned from
    store B with its lineage found in the shared index (blocked in us-east-1 by the EU rule; allowed in the
    EU), and the fine-tune's upstream -- base model and the base's data -- is one query away."""
    postgres_url = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@")  # a password (trust auth ignores it)
    monkeypatch.setenv("PROV4TORCH_INDEX", postgres_url)
    monkeypatch.setenv("PROV4TORCH_SIDECAR", "0")
    ckpt = pretrain(tmp_path, tmp_path / "store-a")
    assert not (ckpt.parent / "model.pt.lineage.json").exists()
    assert not (tmp_path / "store-a" / ".lineage" / "index.sqlite").exists()  # the shared index, not the file
    with pytest.raises(prov4torch.PolicyViolation, match="eu-personal-data-stays-in-eu"):
        with prov4torch.start_run(out_dir=tmp_path / "store-b", region="us-east-1", purpose="training",
                                  policy="default"):
            prov4torch.load_model(ckpt)
    tuned = tmp_path / "tuned.pt"
    with prov4torch.start_run(out_dir=tmp_path / "store-c", region="eu-west-1", purpose="training",
                              policy="default") as run:
        prov4torch.load_model(ckpt)
        torch.save(torch.nn.Linear(2, 3).state_dict(), tuned)
        prov4torch.log_model(tuned, name="tuned")
    doc = load(run.prov_path)
    (base_use,) = [u for u in doc["used"].values() if role(u) == "p4t:baseModel"]
    assert base_use["p4t:lineageKnown"] is True and "postgres" in base_use["p4t:lineageFrom"]
    for f in tmp_path.rglob("*"):  # the password is in no file any run wrote
        assert not f.is_file() or b"s3cr3t-pw" not in f.read_bytes(), f
    (tuned_id,) = [g["prov:entity"] for g in doc["wasGeneratedBy"].values()
                   if g["prov:entity"].startswith("p4t:model/")]
    proc = subprocess.run([*CLI, "index", "upstream", tuned_id, "--index", postgres_url, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    upstream = json.loads(proc.stdout)["upstream"]
    assert base_use["prov:entity"] in upstream and any(u.startswith("p4t:dataset/") for u in upstream)


def test_index_rebuild_fills_postgres_from_the_store_files(tmp_path: Path, postgres_url: str):
    ckpt = pretrain(tmp_path, tmp_path / "store-a")
    shutil.rmtree(tmp_path / "store-a" / ".lineage")
    proc = subprocess.run([*CLI, "index", "rebuild", str(tmp_path / "store-a"), "--index", postgres_url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "1 checkpoint lineage card(s)" in proc.stdout, proc.stderr
    assert not (tmp_path / "store-a" / ".lineage" / "index.sqlite").exists()
    import hashlib

    card = LineageIndex(tmp_path, url=postgres_url).get(hashlib.sha256(ckpt.read_bytes()).hexdigest())
    assert card is not None and any(u.startswith("p4t:dataset/") for u in card["upstream"])


def test_an_unreachable_postgres_index_warns_once_and_the_run_goes_on(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROV4TORCH_INDEX", f"postgresql://nobody@/p4t?host={tmp_path / 'no-server'}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with prov4torch.start_run() as run:
            prov4torch.log_dataset(__file__, name="d", origin_country="FR", jurisdiction="EU", license="MIT")
            for i in range(3):
                torch.save(torch.nn.Linear(2, i + 1).state_dict(), tmp_path / f"m{i}.pt")
                prov4torch.log_model(tmp_path / f"m{i}.pt", name=f"m{i}")
    said = [str(w.message) for w in caught if "lineage index" in str(w.message)]
    assert len(said) == 1 and "index rebuild" in said[0], said
    assert run.status == "FINISHED"
    assert all((tmp_path / f"m{i}.pt.lineage.json").is_file() for i in range(3))  # the sidecars still written
    cards = [e for e in load(run.prov_path)["entity"] if e.startswith("p4t:model/")]
    assert len(cards) == 3


@pytest.mark.parametrize("url", ["mysql://db/x", "postgresql://nobody@/x?host=/nonexistent"])
def test_index_commands_fail_in_one_line_on_a_bad_or_dead_index(tmp_path: Path, url: str):
    (tmp_path / "store").mkdir()
    for args in (["rebuild", "store"], ["upstream", "p4t:model/x"]):
        proc = subprocess.run([*CLI, "index", *args, "--index", url], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "internal error" not in proc.stderr and ("PostgreSQL" in proc.stderr or "postgres" in proc.stderr)


FORKS = """
import os, sys
from pathlib import Path
from prov4torch.governance import index as ix
url = sys.argv[1]
index = ix.LineageIndex(Path("."), url=url)
index.put({"model": "p4t:model/a", "sha256": "a" * 64, "derivations": [["p4t:model/a", "p4t:dataset/d"]]})
(parent_con,) = ix._CONNECTIONS.values()  # kept for the next card
pid = os.fork()
if pid == 0:  # a child that exits the normal way: finalizers run, its copy of the connection is closed
    sys.exit(0)
os.waitpid(pid, 0)
index.put({"model": "p4t:model/b", "sha256": "b" * 64, "derivations": [["p4t:model/b", "p4t:model/a"]]})
assert ix._CONNECTIONS[(os.getpid(), url)] is parent_con, "the parent's session ended with the child"
print(index.upstream("p4t:model/b"))
"""


def test_a_kept_postgres_connection_survives_a_forked_child(tmp_path: Path, postgres_url: str):
    """A rank keeps its connection between cards; a child it forks (a DataLoader worker, os.fork) must not end
    the rank's session when it exits."""
    (tmp_path / "f.py").write_text(FORKS)
    proc = subprocess.run([sys.executable, "f.py", postgres_url], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['p4t:dataset/d', 'p4t:model/a']"
