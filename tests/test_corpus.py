"""The shared PROV-JSON corpus (1,124 documents by other tools): our readers never crash on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CORPUS

from prov4torch.errors import Prov4TorchError
from prov4torch.governance.evaluate import check

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/prov-corpus is not beside the checkout")


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*.json") if "schema" not in p.parts)


def test_check_gives_a_verdict_or_a_clean_error_for_every_corpus_file():
    files = corpus_files()
    assert len(files) > 1000
    errors = []
    for f in files:
        try:
            assert check([f], "default").verdict in ("allow", "deny")
        except Prov4TorchError as exc:
            errors.append((f, str(exc)))
    # a file is refused (never allowed unread) only when it is labelled invalid; each message names the file
    assert all(str(f) in msg for f, msg in errors)
    assert {f.relative_to(CORPUS).parts[0] for f, _ in errors} == {"invalid"}
    assert len(errors) == 15
