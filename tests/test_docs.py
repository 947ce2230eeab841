"""Docs that must stay true: the README's two set-up commands run in CI, every command is documented."""

from __future__ import annotations

import re

from conftest import ROOT
from prov4torch_cli.app import app
from typer.testing import CliRunner


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_screen = text.split("\n---\n", 1)[0]
    return re.findall(r"```bash\n(bash scripts/bootstrap.sh[^\n]*)\n```", first_screen)


def test_readme_first_screen_has_exactly_two_setup_commands_and_ci_runs_both():
    commands = readme_commands()
    assert len(commands) == 2
    assert "prov4torch run" in commands[0] and "examples/mnist/train.py" in commands[0]
    assert commands[1].endswith("-m pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    for cmd in commands:
        assert cmd in ci_lines, f"CI does not run the README command: {cmd}"
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    torch_pin = bootstrap.index("pip install -q torch==2.13.0")
    assert torch_pin < bootstrap.index("pip install -q torch==2.13.0 -e '.[test,examples,integrations]'")
    assert "graphviz" in bootstrap


def test_every_cli_command_is_documented_with_help():
    doc = (ROOT / "docs" / "cli.md").read_text()
    runner = CliRunner()
    group = runner.invoke(app, ["--help"])
    assert group.exit_code == 0
    commands = [c.name for c in __import__("typer").main.get_command(app).commands.values()]
    assert commands
    for name in commands:
        assert f"## prov4torch {name}" in doc, f"docs/cli.md lacks a section for {name}"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_vocabulary_documents_every_term_the_writer_uses():
    import importlib
    import inspect
    import pkgutil

    import prov4torch
    import prov4torch.samplers.gpu as gpu
    import prov4torch.samplers.system as system
    from prov4torch.governance.tags import DATASET_TAGS

    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(prov4torch.__path__, "prov4torch.")]
    assert len(modules) > 30
    vocab = (ROOT / "docs" / "vocabulary.md").read_text()
    source = "".join(inspect.getsource(m) for m in modules)
    terms = set(re.findall(r'"p4t:([A-Za-z0-9]+)"', source))
    terms |= {attr.split(":")[1] for attr, _ in DATASET_TAGS.values()}
    terms |= {"systemSamplerOff", "gpuSamplerOff"}  # written as f"p4t:{name}SamplerOff"
    metric_names = {v for m in (system, gpu) for k, v in vars(m).items() if k.isupper() and isinstance(v, str)}
    missing_metrics = sorted(n for n in metric_names if f"`{n}`" not in vocab)
    assert not missing_metrics, f"docs/vocabulary.md lacks metric names: {missing_metrics}"
    missing = sorted(t for t in terms if f"`p4t:{t}`" not in vocab)
    assert not missing, f"docs/vocabulary.md lacks: {missing}"


def test_every_environment_variable_is_named_in_env_py_and_the_readme():
    """Issue 21: the PROV4TORCH_* names live in env.py alone, and the README lists every one of them."""
    from prov4torch import env

    names = {v for k, v in vars(env).items() if k.isupper() and isinstance(v, str) and v.startswith("PROV4TORCH_")}
    readme = (ROOT / "README.md").read_text()
    assert sorted(n for n in names if f"`{n}" not in readme) == []
    used = set()
    for path in list((ROOT / "prov4torch").rglob("*.py")) + list((ROOT / "cli").rglob("*.py")):
        if path.name != "env.py":
            used |= set(re.findall(r'"(PROV4TORCH_[A-Z_]+)"', path.read_text(encoding="utf-8")))
    assert sorted(used - names) == [], "a PROV4TORCH_* name defined outside env.py"


def test_the_openlineage_facet_schemas_in_the_docs_are_the_ones_the_package_checks_with():
    import json
    import re

    text = (ROOT / "docs" / "openlineage.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, re.S)]
    folder = ROOT / "prov4torch" / "audit" / "schemas" / "openlineage"
    kept = [json.loads((folder / f"Prov4torch{n}Facet.json").read_text()) for n in ("Governance", "Run")]
    assert blocks == kept
