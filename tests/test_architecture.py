"""The shape of the package (issue 10): wings without import cycles, small modules, no reaching into
another object's private state. Checked on the source with ``ast``, so a violation names its line."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "prov4torch"
WINGS = ("record", "governance", "audit", "autolog", "samplers", "evidence")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The prov4torch modules ``name`` imports (function-level and TYPE_CHECKING imports included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" for a in node.names] + [prefix]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_module_import_graph_has_no_cycle():
    # a package imports its submodules' names only in prov4torch/__init__ (the fluent API)
    edges = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph().items()}
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges) or [])}"


def test_the_wings_depend_on_each_other_in_one_direction():
    wing_edges: dict[str, set[str]] = defaultdict(set)
    for n, deps in graph().items():
        parts = n.split(".")
        if len(parts) < 2 or parts[1] not in WINGS:
            continue
        for m in deps:
            other = m.split(".")
            if len(other) > 1 and other[1] in WINGS and other[1] != parts[1]:
                wing_edges[parts[1]].add(other[1])
    assert find_cycle(wing_edges) is None, dict(wing_edges)
    # the layering the design notes describe
    assert "record" not in wing_edges["governance"] and "autolog" not in wing_edges["record"]
    assert wing_edges["samplers"] == set() and "governance" not in wing_edges["audit"]
    assert wing_edges["evidence"] <= {"audit"}, "evidence knows files and digests, not runs or policies"


MAX_FUNCTION_LINES = 80  # the budget (issue 21); complexity is ruff's C901 at 30 (pyproject), run by CI


def test_no_function_is_over_the_budget():
    """A size budget per function, not per module: modules split by concern, not to pass a line cap."""
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_ruff_enforces_the_complexity_budget():
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]
    assert "C901" in config["select"] and config["mccabe"]["max-complexity"] == 30


# third-party internals the zero-code patches must hook (there is no public seam for them)
# torch's DataLoader iterator and its dataset; rdflib's plain-literal table (its TriG writer truncates doubles)
THIRD_PARTY_INTERNALS = {"_BaseDataLoaderIter", "_dataset", "_PLAIN_LITERAL_TYPES", "_XSD_DOUBLE",
                         "_version",  # (torch.Tensor._version: the version counter autograd itself checks)
                         "_exit"}  # (os._exit: public, whatever its name says; prov4torch run concludes the run in it)


def test_nothing_reaches_into_another_objects_private_attributes():
    """``obj._x`` is allowed only on ``self``/``cls``; module-private names stay in their module."""
    offences = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) or node.attr in THIRD_PARTY_INTERNALS:
                    continue
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and (node.level or node.module.startswith("prov4torch")):
                offences += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: import {a.name}"
                             for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert offences == []
