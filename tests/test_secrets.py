"""Secrets never reach the record: by name and by shape, in parameters, tags and the command line."""

from __future__ import annotations

import json

import pytest
from conftest import load, only_run_dir, rank_activity

import prov4torch
from prov4torch.record.secrets import REDACTED, redact, redact_command

TOKENS = ["hf_" + "a1B2" * 8, "sk-" + "x" * 30, "ghp_" + "Z9" * 15, "AKIA" + "ABCDEFGHIJKLMNOP",
          "xoxb-1234567890-abcdef", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N"]


@pytest.mark.parametrize("name", ["token", "hub_token", "api_key", "api-key", "AWS_SECRET_ACCESS_KEY", "password",
                                  "db.password", "wandb.key", "credentials", "auth", "Authorization", "passphrase",
                                  "cookie", "storage.account_key", "AZURE_STORAGE_CONNECTION_STRING"])
def test_secret_names_are_redacted(name: str):
    assert redact(name, "plain-value") == REDACTED


@pytest.mark.parametrize("name", ["lr", "keyboard_layout", "monkey", "tokenizer", "max_tokens", "author", "basic_block",
                                  "session_len"])
def test_ordinary_names_are_kept(name: str):
    assert redact(name, 0.1) == 0.1


SHAPES = ["-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
          "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",  # cut off: to the end of the text
          "Basic dXNlcjpwYXNzd29yZA==", "Bearer abcdefghijklmnop1234.xyz", "github_pat_" + "A1b2" * 8,
          "glpat-" + "x1Y2" * 5, "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "AIza" + "SyA-abcdefghijklmnopqrstuvwxyz12345",
          "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=abcd/efgh+ij==;EndpointSuffix=x"]


@pytest.mark.parametrize("value", [*TOKENS, *SHAPES, "https://bob:hunter2@example.org/data"])
def test_secret_shaped_values_are_redacted_whatever_their_name(value: str):
    assert redact("note", value) == REDACTED
    assert all(value not in tok for tok in redact_command(["train.py", f"--note={value}", "--x", value]))


@pytest.mark.parametrize("text", ["Basic augmentation pipeline", "the bearer of the model", "a basic 3-layer MLP"])
def test_ordinary_text_that_resembles_a_credential_header_is_kept(text: str):
    assert redact("note", text) == text


def test_command_line_hides_the_value_after_a_secret_option():
    assert redact_command(["t.py", "--token", "abc", "--lr", "0.1", "--api-key=xyz"]) == \
        ["t.py", "--token", REDACTED, "--lr", "0.1", "--api-key=" + REDACTED]


def test_nothing_secret_reaches_any_file_of_a_run(tmp_path, monkeypatch):
    secret = TOKENS[0]
    monkeypatch.setattr("sys.argv", ["train.py", "--hf-token", secret])
    with prov4torch.start_run(out_dir=tmp_path / "runs"):
        prov4torch.log_params({"hub_token": secret, "lr": 0.1, "remote": f"https://me:{secret}@hub/x"})
        prov4torch.set_tag("comment", f"pushed with {secret}")
    run_dir = only_run_dir(tmp_path)
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f
    doc = load(run_dir / "rank-0.prov.json")
    params = next(e for k, e in doc["entity"].items() if k.endswith("/params"))
    assert params["param:lr"] == {"$": "0.1", "type": "xsd:double"}  # ordinary values untouched
    assert params["param:hub_token"] == REDACTED and params["param:remote"] == REDACTED
    assert REDACTED in json.dumps(rank_activity(doc)["p4t:commandLine"])
