"""One patch mechanism and one warning helper (issue 21): every replacement installs once, restores exactly,
and a warning raised under a patch points where it belongs -- torch's at torch, prov4torch's at the user's line."""

from __future__ import annotations

import re
import types
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import prov4torch
from prov4torch.patching import Patches, original_of

PACKAGE = Path(prov4torch.__file__).parent


def test_replace_marks_refuses_a_second_install_and_restores_exactly():
    owner = types.SimpleNamespace(f=lambda: "original")
    first, second = Patches(), Patches()
    new = first.replace(owner, "f", lambda orig: lambda: "patched " + orig())
    assert owner.f() == "patched original" and original_of(owner.f)() == "original"
    assert second.replace(owner, "f", lambda orig: lambda: "twice") is None  # ours already: not wrapped again
    assert owner.f is new
    first.restore()
    assert owner.f() == "original" and original_of(owner.f) is None


def test_an_inherited_attribute_is_deleted_again_not_copied_down():
    class Base:
        def hello(self) -> str:
            return "base"

    class Child(Base):
        pass

    p = Patches()
    p.replace(Child, "hello", lambda orig: lambda self: "patched")
    assert "hello" in vars(Child) and Child().hello() == "patched"
    p.restore()
    assert "hello" not in vars(Child) and Child().hello() == "base"


def test_own_only_replaces_what_the_owner_defines_itself():
    class Base:
        def get(self) -> int:
            return 1

    class Child(Base):
        pass

    assert Patches().replace(Child, "get", lambda orig: orig, own=True) is None
    assert "get" not in vars(Child)


def test_a_hook_installed_over_ours_later_is_left_alone_on_restore():
    owner = types.SimpleNamespace(f=lambda: 1)
    p = Patches()
    p.replace(owner, "f", lambda orig: lambda: orig() + 1)
    theirs = lambda: 100  # noqa: E731 - another library's patch, installed after ours
    owner.f = theirs
    p.restore()
    assert owner.f is theirs


def test_classmethods_are_marked_and_restored():
    class Thing:
        pass

    p = Patches()
    p.replace(Thing, "__init_subclass__", lambda orig: classmethod(lambda cls, **kw: None))
    assert original_of(Thing.__init_subclass__) is not None  # marked through the bound method
    assert Patches().replace(Thing, "__init_subclass__", lambda orig: classmethod(lambda cls, **kw: None)) is None
    p.restore()
    assert "__init_subclass__" not in vars(Thing)


def test_no_module_replaces_a_function_by_hand_or_fixes_a_stacklevel():
    """Every replacement goes through ``Patches``, every warning through ``prov4torch.warn``."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("patching.py", "warn.py") and path.parent == PACKAGE:
            continue
        text = path.read_text()
        for pattern in (r"stacklevel=", r"noqa: B010", r"\bsetattr\((?!target)", r"warnings\.warn\("):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(PACKAGE)}: {pattern}")
    assert offenders == []


def test_torch_warnings_under_a_patch_keep_their_place_and_ours_point_at_the_user(tmp_path: Path):
    """``pin_memory`` without an accelerator is torch's warning, raised in a patched iterator constructor: it
    names torch's file. An audit-mode PolicyWarning names this test's line, not prov4torch's."""
    ds = TensorDataset(torch.zeros(8, 2))
    with prov4torch.start_run(out_dir=tmp_path, policy="default", mode="audit", system_metrics=False,
                              energy=False), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in DataLoader(ds, batch_size=4, pin_memory=not torch.cuda.is_available()):
            pass
    places = {(w.category.__name__, Path(w.filename).resolve()) for w in caught}
    assert all(PACKAGE not in p.parents for _, p in places), places
    assert ("PolicyWarning", Path(__file__).resolve()) in places
    if not torch.cuda.is_available():
        pins = [p for c, p in places if c == "UserWarning"]
        assert pins and all(p.parts[-3:-1] == ("utils", "data") for p in pins), places
