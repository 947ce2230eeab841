"""Evidence, not claims (issue 22): keys, signed run attestations, signed lineage cards, the trust order, verify.

The attacker has write access next to a checkpoint. Whatever they edit or plant, the verdict never moves towards
ALLOW, nothing hangs, and the load is recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load, rank_activity, role
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import prov4torch
from prov4torch.evidence import keys as keymod
from prov4torch.governance.evaluate import check

EU_TAGS = {"origin_country": "DE", "jurisdiction": "EU", "personal_data": True, "consent_scope": ["training"],
           "license": "CC-BY-4.0"}
CLI = [sys.executable, "-m", "prov4torch_cli.app"]


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})})


def pretrain(tmp_path: Path, store: Path) -> Path:
    data = tmp_path / "patients.bin"
    data.write_bytes(b"p" * 100)
    ckpt = tmp_path / "base" / "model.pt"
    ckpt.parent.mkdir(exist_ok=True)
    with prov4torch.start_run(out_dir=store, region="eu-west-1", purpose="training", policy="default"):
        prov4torch.log_dataset(data, name="patients", **EU_TAGS)
        torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
        prov4torch.log_model(ckpt, name="base")
    return ckpt


def fine_tune(store: Path, ckpt: Path, region: str = "us-east-1", policy: str = "default"):
    with prov4torch.start_run(out_dir=store, region=region, purpose="training", policy=policy) as run:
        prov4torch.load_model(ckpt)
    return run


def sidecar(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.name + ".lineage.json")


def statement_of(envelope: dict) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))


def rewrite(path: Path, edit) -> None:
    """Edit the card inside a sidecar envelope, keeping everything else (its signature now covers nothing)."""
    env = json.loads(path.read_text())
    stmt = statement_of(env)
    edit(stmt["predicate"])
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    path.write_text(json.dumps(env))


def base_use(run) -> dict:
    (used,) = [u for u in load(run.prov_path)["used"].values() if role(u) == "p4t:baseModel"]
    return used


# -- the attacks ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signed", [False, True])
def test_an_edited_sidecar_field_never_unblocks_a_fine_tune(tmp_path: Path, signed: bool):
    if signed:
        keymod.init_key()
    ckpt = pretrain(tmp_path, tmp_path / "store")
    env = json.loads(sidecar(ckpt).read_text())
    assert bool(env["signatures"]) is signed and statement_of(env)["predicate"]["governance"]["p4t:personalData"]

    def unpersonal(card: dict) -> None:
        card["governance"]["p4t:personalData"] = False
        for up in card["upstream"].values():
            up["governance"]["p4t:personalData"] = False
            up["tags"]["p4t:personalData"] = False

    rewrite(sidecar(ckpt), unpersonal)
    # the same store: its own index holds the true card and wins
    with pytest.warns(RuntimeWarning, match="disagree|may have been altered"), \
            pytest.raises(prov4torch.PolicyViolation, match="eu-personal-data-stays-in-eu"):
        fine_tune(tmp_path / "store", ckpt)
    (blocked,) = [p for p in (tmp_path / "store").glob("*/*/rank-0.prov.json")
                  if rank_activity(load(p))["p4t:status"] == "BLOCKED"]
    assert check([blocked.parent], "default").prevented  # check says a use was prevented
    # another store (no index): a signed card that was edited is an error, and unknown lineage fails closed;
    # an unsigned one is a claim, and a policy that requires verified lineage refuses it
    if signed:
        with pytest.warns(RuntimeWarning), pytest.raises(prov4torch.PolicyViolation, match="lineage-known"):
            fine_tune(tmp_path / "other", ckpt, region="eu-west-1")
    else:
        strict = tmp_path / "strict.toml"
        default = Path(prov4torch.__file__).parent / "governance" / "policies" / "default.toml"
        strict.write_text(default.read_text().replace('lineage = [', 'require_verified_lineage = true\nlineage = ['))
        with pytest.raises(prov4torch.PolicyViolation, match="lineage-known.*verified"):
            fine_tune(tmp_path / "other", ckpt, region="eu-west-1", policy=str(strict))


BAD_CARDS = {
    "governance a string": lambda c: c.update(governance="EU"),
    "derivations a number": lambda c: c.update(derivations=7),
    "upstream a list": lambda c: c.update(upstream=["x"]),
    "unknown attribute": lambda c: c["governance"].update({"p4t:colour": "red"}),
    "personal data a string": lambda c: c["governance"].update({"p4t:personalData": "no"}),
    "expiry not a date": lambda c: c["governance"].update({"p4t:consentExpires": "yesterday"}),
    "huge derivations": lambda c: c.update(derivations=[["a", "b"]] * 100_001),
}


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_a_malformed_card_is_an_error_on_the_load_and_the_load_is_recorded(tmp_path: Path, case: str):
    ckpt = pretrain(tmp_path, tmp_path / "store")
    rewrite(sidecar(ckpt), BAD_CARDS[case])
    with pytest.warns(RuntimeWarning), pytest.raises(prov4torch.PolicyViolation, match="lineage-known"):
        fine_tune(tmp_path / "other", ckpt, region="eu-west-1")
    store_run = next(p for p in (tmp_path / "other").glob("*/*/rank-0.prov.json"))
    doc = load(store_run)
    (model,) = [e for k, e in doc["entity"].items() if k.startswith("p4t:model/")]  # the load is in the record
    assert model["prov:type"]["$"] == "mls:Model"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge", "directory"])
def test_a_special_or_oversized_sidecar_never_hangs_and_fails_closed(tmp_path: Path, kind: str):
    ckpt = pretrain(tmp_path, tmp_path / "store")
    side = sidecar(ckpt)
    side.unlink()
    if kind == "fifo":
        os.mkfifo(side)
    elif kind == "dev-zero":
        side.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(side, "wb") as fh:
            fh.truncate(64 << 20)
    else:
        side.mkdir()
    with pytest.warns(RuntimeWarning), pytest.raises(prov4torch.PolicyViolation, match="lineage-known"):
        fine_tune(tmp_path / "other", ckpt, region="eu-west-1")


def test_a_card_signed_by_an_untrusted_key_or_replayed_from_another_checkpoint(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    other_key = tmp_path / "intruder.pem"
    keymod.init_key(other_key)
    monkeypatch.setenv("PROV4TORCH_SIGNING_KEY", str(other_key))
    ckpt = pretrain(tmp_path, tmp_path / "store")
    monkeypatch.delenv("PROV4TORCH_SIGNING_KEY")
    keymod.init_key()  # the user's own key is trusted; the intruder's is not
    with pytest.warns(RuntimeWarning, match="no signature verifies.*nothing else"), \
            pytest.raises(prov4torch.PolicyViolation, match="lineage-known"):
        fine_tune(tmp_path / "other", ckpt, region="eu-west-1")
    # a genuine card of another checkpoint, replayed next to this one
    second = tmp_path / "clean.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), second)
    shutil.copy(sidecar(ckpt), sidecar(second))
    with pytest.warns(RuntimeWarning, match="other content.*nothing else"), \
            pytest.raises(prov4torch.PolicyViolation, match="lineage-known"):
        fine_tune(tmp_path / "third", second, region="eu-west-1")


def test_index_and_signed_card_disagreeing_the_restrictive_one_wins_and_the_conflict_is_recorded(tmp_path: Path):
    keymod.init_key()
    data = tmp_path / "public.bin"
    data.write_bytes(b"x" * 64)
    ckpt = tmp_path / "m.pt"
    with prov4torch.start_run(out_dir=tmp_path / "store", region="eu-west-1", purpose="training",
                              policy="default"):
        prov4torch.log_dataset(data, origin_country="DE", jurisdiction="EU", license="CC-BY-4.0",
                               consent_scope=["training", "research"])
        torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
        prov4torch.log_model(ckpt, name="m")
    # the store's own index is edited to say less (consent for commercial use too): the signed card still
    # restricts, so the combination is the intersection, and the conflict is on record
    import sqlite3

    idx = tmp_path / "store" / ".lineage" / "index.sqlite"
    con = sqlite3.connect(idx)
    rows = con.execute("SELECT digest, card FROM cards").fetchall()
    for digest, text in rows:
        card = json.loads(text)
        card["governance"]["p4t:consentScope"] = ["commercial", "research", "training"]
        con.execute("UPDATE cards SET card = ? WHERE digest = ?", (json.dumps(card), digest))
    con.commit()
    con.close()
    with pytest.warns(RuntimeWarning, match="disagree"):
        with prov4torch.start_run(out_dir=tmp_path / "store", region="eu-west-1", purpose="training") as run:
            prov4torch.load_model(ckpt)
    used = base_use(run)
    assert used["p4t:lineageSource"] == "index" and used["p4t:lineageConflict"]
    model = next(e for k, e in load(run.prov_path)["entity"].items() if k.startswith("p4t:model/"))
    assert sorted(model["p4t:consentScope"]) == ["research", "training"]


# -- attestations and verify --------------------------------------------------------------------------------

TRAIN = """
import torch
from torch.utils.data import DataLoader, TensorDataset
ds = TensorDataset(torch.arange(64.).reshape(32, 2), torch.zeros(32, 1))
m = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(m.parameters(), lr=0.01)
for x, y in DataLoader(ds, batch_size=8, shuffle=True):
    opt.zero_grad(); ((m(x) - y) ** 2).mean().backward(); opt.step()
torch.save(m.state_dict(), "model.pt")
"""


def signed_run(tmp_path: Path) -> Path:
    keymod.init_key()
    (tmp_path / "train.py").write_text(TRAIN)
    r = cli("run", "--out", "runs", "train.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/*/")
    return run_dir


def flip_byte(path: Path, at: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_a_signed_run_verifies_and_one_changed_byte_anywhere_is_detected(tmp_path: Path):
    run_dir = signed_run(tmp_path)
    lines = (run_dir / "attestation.intoto.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the rank at its end, the merged document after
    stmt = statement_of(json.loads(lines[0]))
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1"
    names = {s["name"]: s for s in stmt["subject"]}
    assert names["rank-0.prov.json"]["digest"]["sha256"] == hashlib.sha256(
        (run_dir / "rank-0.prov.json").read_bytes()).hexdigest()
    model = next(s for s in stmt["subject"] if s["name"].endswith("model.pt"))
    assert model["digest"]["sha256"] == hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()
    assert model["annotations"]["p4t:weightsSha256"]
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert any(d["annotations"]["kind"] == "dataset" and d["annotations"]["roles"] == ["training"] for d in deps)
    ok = cli("verify", str(run_dir), str(tmp_path / "model.pt"))
    assert ok.returncode == 0 and "FAILED" not in ok.stdout, ok.stdout
    assert cli("check", str(run_dir), "-p", "default", "--require-signed").stdout.count("UNSIGNED") == 0
    for target in (tmp_path / "model.pt", run_dir / "run.prov.json", run_dir / "attestation.intoto.jsonl"):
        saved = target.read_bytes()
        flip_byte(target, at=len(saved) // 2)
        bad = cli("verify", str(run_dir))
        assert bad.returncode in (1, 2) and ("FAILED" in bad.stdout or "UNREADABLE" in bad.stdout), target
        target.write_bytes(saved)
    assert cli("verify", str(run_dir)).returncode == 0
    flip_byte(run_dir / "run.prov.json", at=50)
    refused = cli("check", str(run_dir / "run.prov.json"), "-p", "default", "--require-signed")
    assert refused.returncode == 1 and "UNSIGNED" in refused.stdout


def test_verify_exit_codes_and_an_unsigned_run(tmp_path: Path):
    (tmp_path / "train.py").write_text(TRAIN)
    assert cli("run", "--out", "runs", "train.py", cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "runs").glob("*/*/")
    assert not (run_dir / "attestation.intoto.jsonl").exists()
    r = cli("verify", str(run_dir))
    assert r.returncode == 1 and "not signed" in r.stdout
    assert cli("verify", str(tmp_path / "missing")).returncode == 2
    assert cli("check", str(run_dir), "-p", "default", "--require-signed").returncode == 1


# -- interoperability: a second, independent DSSE implementation ---------------------------------------------

def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def test_envelopes_interoperate_with_an_independent_dsse_implementation(tmp_path: Path):
    run_dir = signed_run(tmp_path)
    pub = serialization.load_pem_public_key((tmp_path / "config" / "prov4torch" / "signing-key.pub.pem").read_bytes())
    assert isinstance(pub, ed25519.Ed25519PublicKey)
    for line in (run_dir / "attestation.intoto.jsonl").read_text().splitlines():
        env = json.loads(line)
        payload = base64.b64decode(env["payload"])
        pub.verify(base64.b64decode(env["signatures"][0]["sig"]), pae(env["payloadType"], payload))  # raises if bad
    # the other way: an envelope signed here, without prov4torch, verifies with prov4torch verify
    other = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "other.pub.pem"
    pem.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    doc = run_dir / "rank-0.prov.json"
    stmt = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
            "subject": [{"name": doc.name, "digest": {"sha256": hashlib.sha256(doc.read_bytes()).hexdigest()}}],
            "predicate": {"buildDefinition": {"buildType": "x"}}}
    payload = json.dumps(stmt).encode()
    ptype = "application/vnd.in-toto+json"
    envelope = {"payloadType": ptype, "payload": base64.b64encode(payload).decode(),
                "signatures": [{"keyid": "", "sig": base64.b64encode(other.sign(pae(ptype, payload))).decode()}]}
    third = tmp_path / "third"
    third.mkdir()
    shutil.copy(doc, third / doc.name)
    (third / "attestation.intoto.jsonl").write_text(json.dumps(envelope) + "\n")
    ok = cli("verify", str(third), "--key", str(pem))
    assert ok.returncode == 0, ok.stdout
    assert cli("verify", str(third)).returncode == 1  # without trusting that key


def test_keys_init_writes_a_private_key_only_its_owner_reads(tmp_path: Path):
    r = cli("keys", "init", "--path", str(tmp_path / "k" / "key.pem"))
    assert r.returncode == 0 and "key id:" in r.stdout
    mode = stat.S_IMODE((tmp_path / "k" / "key.pem").stat().st_mode)
    assert mode == 0o600 and (tmp_path / "k" / "key.pub.pem").is_file()
    again = cli("keys", "init", "--path", str(tmp_path / "k" / "key.pem"))
    assert again.returncode == 2 and "refuses to overwrite" in again.stderr and "Traceback" not in again.stderr


# -- OpenSSF model signing (OMS) ------------------------------------------------------------------------------

def ec_keypair(tmp_path: Path, name: str = "ec") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def test_an_oms_signature_is_written_and_verified_and_a_changed_byte_is_caught(tmp_path: Path):
    pytest.importorskip("model_signing")
    private, public = ec_keypair(tmp_path)
    keymod.init_key()  # the lineage card beside it is signed too: verify checks both
    ckpt = pretrain(tmp_path, tmp_path / "store")
    r = cli("attest", str(ckpt), "--oms", "--key", str(private))
    assert r.returncode == 0 and (ckpt.parent / "model.pt.sig").is_file(), r.stderr
    bundle = json.loads((ckpt.parent / "model.pt.sig").read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    ok = cli("verify", str(ckpt), "--key", str(public))
    assert ok.returncode == 0 and "OMS signature verifies" in ok.stdout, ok.stdout
    _, other_public = ec_keypair(tmp_path, "other")
    untrusted = cli("verify", str(ckpt), "--key", str(other_public))
    assert untrusted.returncode == 1 and "FAILED" in untrusted.stdout  # the OMS signer is not trusted
    flip_byte(ckpt)
    bad = cli("verify", str(ckpt), "--key", str(public))
    assert bad.returncode == 1 and "FAILED" in bad.stdout
    assert cli("attest", str(ckpt), "--oms").returncode == 2  # no key: one line, exit 2
