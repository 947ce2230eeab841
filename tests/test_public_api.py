"""The public surface: a sorted __all__ that only changes on purpose, and a cheap import."""

from __future__ import annotations

import subprocess
import sys

import prov4torch

EXPECTED = [
    "NAMESPACE", "ConfigError", "InvalidValueError", "JournalError", "MalformedEventError", "MergeConflictError",
    "MissingExtraError", "ModelVersion", "PolicyViolation", "Prov4TorchError", "Run", "RunStateError",
    "EvidenceError", "GpuUnavailable", "PolicyWarning", "ProvInputError", "TelemetryWarning", "UnreadableContentError",
    "__version__", "active_run", "end_run", "flush", "load_model", "log_artifact", "log_dataset",
    "log_metric", "log_metrics", "log_model", "log_param", "log_params", "recover", "set_tag",
    "set_tags", "start_run", "check", "track", "declare_checkpoint", "load_tags",
]


def test_all_is_sorted_and_complete():
    def isort_style(name: str) -> tuple[int, str]:  # ruff RUF022: CONSTANTS, Classes, functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert prov4torch.__all__ == sorted(EXPECTED, key=isort_style)
    for name in prov4torch.__all__:
        assert hasattr(prov4torch, name), name


def test_every_error_is_a_prov4torch_error():
    for name in ["ConfigError", "InvalidValueError", "JournalError", "MergeConflictError", "EvidenceError",
                 "MissingExtraError", "PolicyViolation", "RunStateError", "ProvInputError", "UnreadableContentError",
                 "GpuUnavailable"]:
        assert issubclass(getattr(prov4torch, name), prov4torch.Prov4TorchError)
    assert issubclass(prov4torch.PolicyWarning, UserWarning)
    assert issubclass(prov4torch.TelemetryWarning, RuntimeWarning)


def test_every_exception_and_warning_class_lives_in_errors_py():
    """One errors module (issue 21): no class deriving from Exception or Warning is defined anywhere else."""
    import ast
    from pathlib import Path

    root = Path(prov4torch.__file__).parent
    elsewhere = []
    for path in root.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Warning", "Exception", "Violation"))
                                                 or b.id == "BaseException") for b in node.bases):
                elsewhere.append(f"{path.relative_to(root)}: {node.name}")
    assert elsewhere == []


def test_import_is_cheap_no_heavy_modules():
    code = ("import sys, prov4torch; heavy = [m for m in ('torch', 'typer', 'graphviz', 'codecarbon', "
            "'pynvml', 'prov', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
