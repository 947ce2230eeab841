"""Policies (TOML, DESIGN §5): load, validate, evaluate over a provenance graph.

One evaluator serves both uses: at runtime on the run's own record (plus a virtual
"model this run will produce"), and after the fact on any PROV-JSON files. Names
are compared as expanded IRIs; an attribute with several values matches when any
value matches.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .provgraph import DEFAULT_LINEAGE, UPSTREAM, Graph, Node
from .provjson import PREFIXES

# prov4torch's structural activities: a policy check reads tags, the job activity links ranks;
# neither processes data, so rules judge the rank activities instead
NOT_PROCESSING = {"https://w3id.org/prov4torch/ns#PolicyCheck", "https://w3id.org/prov4torch/ns#DistributedJob"}
TOP_LEVEL = {"policy", "version", "description", "prefixes", "classes", "lineage", "rules"}
RULE_COMMON = {"id", "description", "effect", "target", "scope", "check", "maps_to"}
TARGETS = ("model", "dataset", "activity")
SCOPES = ("direct", "lineage")

# check kind -> {parameter: (type description, validator, required)}
_STR = ("a string", lambda v: isinstance(v, str) and bool(v.strip()))
_STRS = ("a list of strings", lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v))
_GROUPS = ("a list of at least two lists of strings",
           lambda v: isinstance(v, list) and len(v) >= 2 and all(_STRS[1](g) for g in v))
_TABLE = ("a table of attribute = value", lambda v: isinstance(v, dict) and bool(v)
          and all(isinstance(x, (str, bool, int, float)) for x in v.values()))
_INCOMPAT = ("a table of use = list of licence ids",
             lambda v: isinstance(v, dict) and bool(v) and all(_STRS[1](x) for x in v.values()))
_MISSING = ('"violation" or "ignore"', lambda v: v in ("violation", "ignore"))

CHECKS: dict[str, dict[str, tuple[str, Any, bool]]] = {
    "forbid_combination": {"attribute": (*_STR, True), "groups": (*_GROUPS, True)},
    "purpose_in_consent": {"activity_attribute": (*_STR, True), "dataset_attribute": (*_STR, True)},
    "region_allowed": {
        "applies_if_dataset": (*_TABLE, False), "unless_dataset_has": (*_STR, False),
        "activity_attribute": (*_STR, True), "allowed": (*_STRS, True), "missing_attribute": (*_MISSING, False),
    },
    "use_not_prohibited": {"model_attribute": (*_STR, True), "dataset_attribute": (*_STR, True)},
    "license_compatible": {
        "model_attribute": (*_STR, True), "dataset_attribute": (*_STR, True), "incompatible": (*_INCOMPAT, True),
    },
    "required_attributes": {"attributes": (*_STRS, True)},
    "before_expiry": {"activity_attribute": (*_STR, True), "dataset_attribute": (*_STR, True)},
}
ATTRIBUTE_PARAMS = {"attribute", "activity_attribute", "dataset_attribute", "model_attribute",
                    "unless_dataset_has"}


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    target: str
    scope: str
    check: str
    params: dict[str, Any]
    maps_to: dict[str, Any] = field(default_factory=dict)


@dataclass
class Policy:
    name: str
    version: str
    rules: list[Rule]
    prefixes: dict[str, str]
    dataset_classes: set[str]
    model_classes: set[str]
    lineage: tuple[str, ...]
    source: str = "<policy>"
    sha256: str = ""

    def expand(self, name: str) -> str:
        prefix, sep, local = name.partition(":")
        if sep and prefix in self.prefixes:
            return self.prefixes[prefix] + local
        return name


@dataclass(frozen=True)
class Violation:
    """One rule broken by one subject, because of these datasets."""

    rule: str
    description: str
    subject: str
    datasets: tuple[str, ...]
    attribute: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "subject": self.subject, "datasets": list(self.datasets),
                "attribute": self.attribute, "reason": self.reason, "description": self.description}


# -- loading -------------------------------------------------------------------------------------

def _err(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}")


def builtin_policy_path(name: str) -> Path | None:
    """The path of a policy shipped with prov4torch (``default``), if ``name`` is one."""
    candidate = resources.files("prov4torch") / "policies" / f"{name}.toml"
    return Path(str(candidate)) if candidate.is_file() else None


def load_policy(spec: str | Path | Policy) -> Policy:
    """A validated policy from a TOML file, or a built-in name such as ``default``."""
    if isinstance(spec, Policy):
        return spec
    path = Path(spec)
    if not path.exists() and isinstance(spec, str) and "/" not in spec and not spec.endswith(".toml"):
        builtin = builtin_policy_path(spec)
        if builtin is None:
            raise ConfigError(f"policy {spec!r}: no such file and no built-in policy of that name (try 'default')")
        path = builtin
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: policy file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    policy = parse_policy(data, str(path))
    policy.sha256 = hashlib.sha256(raw).hexdigest()
    return policy


def parse_policy(data: Mapping[str, Any], source: str = "<policy>") -> Policy:
    """Validate a policy's parsed TOML; errors name the rule and the field."""
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise _err(source, "top level", f"unknown key(s) {', '.join(map(repr, unknown))}; "
                   f"allowed: {', '.join(sorted(TOP_LEVEL))}")
    name = data.get("policy", Path(source).stem)
    if not isinstance(name, str):
        raise _err(source, "field 'policy'", "expected a string (the policy's name)")
    version = data.get("version", "")
    if not isinstance(version, (str, int, float)):
        raise _err(source, "field 'version'", "expected a string or number")
    prefixes = dict(PREFIXES)
    user_prefixes = data.get("prefixes", {})
    if not isinstance(user_prefixes, dict) or not all(isinstance(v, str) for v in user_prefixes.values()):
        raise _err(source, "[prefixes]", "expected a table of prefix = IRI strings")
    prefixes.update(user_prefixes)

    def expand(n: str) -> str:
        prefix, sep, local = n.partition(":")
        if sep and prefix in prefixes:
            return prefixes[prefix] + local
        if sep and not n.startswith(("http:", "https:", "urn:")):
            raise _err(source, f"name {n!r}", f"prefix {prefix!r} is not declared in [prefixes]")
        return n

    classes = data.get("classes", {})
    if not isinstance(classes, dict) or set(classes) - {"dataset", "model"}:
        raise _err(source, "[classes]", "expected a table with keys 'dataset' and/or 'model'")

    def class_set(key: str, default: str) -> set[str]:
        v = classes.get(key, default)
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
            raise _err(source, f"[classes] field {key!r}", "expected a type name or a list of them")
        return {expand(x) for x in items}

    lineage = data.get("lineage", list(DEFAULT_LINEAGE))
    if not isinstance(lineage, list) or not all(isinstance(x, str) for x in lineage):
        raise _err(source, "field 'lineage'", "expected a list of relation names")
    bad = [r for r in lineage if r not in UPSTREAM]
    if bad:
        raise _err(source, "field 'lineage'", f"unknown relation(s) {bad}; known: {', '.join(UPSTREAM)}")
    rules_raw = data.get("rules", [])
    if not isinstance(rules_raw, list) or not all(isinstance(r, dict) for r in rules_raw):
        raise _err(source, "rules", "expected [[rules]] tables")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, r in enumerate(rules_raw, 1):
        rules.append(_parse_rule(r, i, source, seen, expand))
    return Policy(name=name, version=str(version), rules=rules, prefixes=prefixes,
                  dataset_classes=class_set("dataset", "mls:Dataset"),
                  model_classes=class_set("model", "mls:Model"), lineage=tuple(lineage), source=source)


def _parse_rule(r: Mapping[str, Any], index: int, source: str, seen: set[str], expand: Any) -> Rule:
    rid = r.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise _err(source, f"rule #{index}", "field 'id' is missing or not a string")
    where = f"rule {rid!r}"
    if rid in seen:
        raise _err(source, where, "duplicate id; every rule needs its own")
    seen.add(rid)
    effect = r.get("effect", "deny")
    if effect != "deny":
        raise _err(source, f"{where}: field 'effect'", f"only \"deny\" is supported, got {effect!r}")
    target = r.get("target")
    if target not in TARGETS:
        raise _err(source, f"{where}: field 'target'", f"expected one of {', '.join(TARGETS)}, got {target!r}")
    scope = r.get("scope", "lineage")
    if scope not in SCOPES:
        raise _err(source, f"{where}: field 'scope'", f"expected one of {', '.join(SCOPES)}, got {scope!r}")
    check = r.get("check")
    if check not in CHECKS:
        raise _err(source, f"{where}: field 'check'", f"unknown check kind {check!r}; known: {', '.join(CHECKS)}")
    spec = CHECKS[check]
    params: dict[str, Any] = {}
    for key, value in r.items():
        if key in RULE_COMMON:
            continue
        if key not in spec:
            raise _err(source, f"{where}: field {key!r}",
                       f"unknown parameter for check {check!r}; allowed: {', '.join(spec)}")
        what, valid, _req = spec[key]
        if not valid(value):
            raise _err(source, f"{where}: field {key!r}", f"expected {what}, got {value!r}")
        params[key] = value
    for key, (what, _v, required) in spec.items():
        if required and key not in params:
            raise _err(source, f"{where}: field {key!r}", f"missing; check {check!r} needs it ({what})")
    for key in ATTRIBUTE_PARAMS & set(params):
        params[key] = expand(params[key])
    if check == "required_attributes":
        params["attributes"] = [expand(a) for a in params["attributes"]]
    if check == "region_allowed":
        params["applies_if_dataset"] = {expand(k): v for k, v in params.get("applies_if_dataset", {}).items()}
        params.setdefault("missing_attribute", "violation")
    desc = r.get("description", "")
    maps_to = r.get("maps_to", {})
    if not isinstance(desc, str):
        raise _err(source, f"{where}: field 'description'", "expected a string")
    if not isinstance(maps_to, dict):
        raise _err(source, f"{where}: field 'maps_to'", "expected a table")
    return Rule(rid, desc, target, scope, check, params, maps_to)


# -- evaluation ------------------------------------------------------------------------------------

def _matches(values: Iterable[Any], wanted: Any) -> bool:
    for v in values:
        if isinstance(wanted, bool) or isinstance(v, bool):
            if _truthy(v) == _truthy(wanted):
                return True
        elif str(v).lower() == str(wanted).lower():
            return True
    return False


def _truthy(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if isinstance(v, (int, float)):
        return bool(v)
    return None


def _lower(values: Iterable[Any]) -> set[str]:
    return {str(v).lower() for v in values}


def parse_time(v: Any) -> _dt.datetime | None:
    if isinstance(v, _dt.datetime):
        return v if v.tzinfo else v.replace(tzinfo=_dt.UTC)
    if not isinstance(v, str):
        return None
    try:
        t = _dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


class Evaluator:
    """Evaluates a policy over one graph; lineage walks are cached per subject."""

    def __init__(self, policy: Policy, graph: Graph) -> None:
        self.policy = policy
        self.graph = graph
        self.datasets = {n.id for n in graph.of_type(policy.dataset_classes)}
        self.models = [n for n in graph.of_type(policy.model_classes)]
        self._upstream: dict[str, dict[str, int]] = {}

    def upstream(self, nid: str) -> dict[str, int]:
        if nid not in self._upstream:
            self._upstream[nid] = self.graph.walk(nid, self.policy.lineage, "up")
        return self._upstream[nid]

    def subjects(self, rule: Rule) -> list[Node]:
        if rule.target == "model":
            return self.models
        if rule.target == "dataset":
            return [self.graph.nodes[d] for d in sorted(self.datasets)]
        # activities that processed data: directly, or (lineage scope) through what they used
        return [a for a in self.graph.activities() if not a.types() & NOT_PROCESSING and self.scope(rule, a)]

    def _direct(self, nid: str) -> list[str]:
        node = self.graph.nodes[nid]
        if "activity" in node.kinds:
            return sorted(self.graph.up["used"].get(nid, set()) & self.datasets)
        if nid in self.datasets:
            return [nid]
        return sorted(self.graph.up["wasDerivedFrom"].get(nid, set()) & self.datasets)

    def scope(self, rule: Rule, subject: Node) -> list[str]:
        if rule.scope == "direct":
            return self._direct(subject.id)
        found = set(self.upstream(subject.id)) & self.datasets
        if subject.id in self.datasets:
            found.add(subject.id)
        return sorted(found)

    def activities_for(self, rule: Rule, subject: Node) -> list[tuple[Node, list[str]]]:
        """(activity, datasets it used that are in scope) pairs a purpose/region/time rule judges."""
        in_scope = set(self.scope(rule, subject))
        if "activity" in subject.kinds:
            return [(subject, sorted(in_scope))]
        acts = [self.graph.nodes[a] for a in self.upstream(subject.id) if "activity" in self.graph.nodes[a].kinds]
        out = []
        for act in acts:
            used = set(self.graph.up["used"].get(act.id, set())) | set(self.upstream(act.id))
            ds = sorted(used & in_scope)
            if ds:
                out.append((act, ds))
        return out

    def evaluate(self) -> list[Violation]:
        out: list[Violation] = []
        for rule in self.policy.rules:
            for subject in self.subjects(rule):
                out.extend(getattr(self, f"_check_{rule.check}")(rule, subject))
        return out

    def _v(self, rule: Rule, subject: Node, datasets: Iterable[str], attribute: str, reason: str) -> Violation:
        g = self.graph
        return Violation(rule.id, rule.description, g.short(subject.id),
                         tuple(g.short(d) for d in sorted(datasets)), g.short(attribute), reason)

    # -- the seven checks -----------------------------------------------------------------------
    def _check_forbid_combination(self, rule: Rule, subject: Node) -> list[Violation]:
        attr, groups = rule.params["attribute"], rule.params["groups"]
        hits: dict[int, set[str]] = {}
        for d in self.scope(rule, subject):
            values = _lower(self.graph.nodes[d].values(attr))
            for i, group in enumerate(groups):
                if values & _lower(group):
                    hits.setdefault(i, set()).add(d)
        if len(hits) < 2:
            return []
        blended = " + ".join("/".join(groups[i]) for i in sorted(hits))
        offending = set().union(*hits.values())
        return [self._v(rule, subject, offending, attr, f"combines data from {blended}")]

    def _check_purpose_in_consent(self, rule: Rule, subject: Node) -> list[Violation]:
        a_attr, d_attr = rule.params["activity_attribute"], rule.params["dataset_attribute"]
        out = []
        for act, datasets in self.activities_for(rule, subject):
            purposes = _lower(act.values(a_attr))
            for d in datasets:
                consent = _lower(self.graph.nodes[d].values(d_attr))
                if not consent:
                    continue
                if not purposes:
                    out.append(self._v(rule, act, [d], a_attr, "the activity declares no purpose, "
                                       f"but the data is consented only for {sorted(consent)}"))
                elif not purposes & consent:
                    out.append(self._v(rule, act, [d], d_attr, f"purpose {sorted(purposes)} is not within "
                                       f"the consent scope {sorted(consent)}"))
        return out

    def _check_region_allowed(self, rule: Rule, subject: Node) -> list[Violation]:
        p = rule.params
        allowed = _lower(p["allowed"])
        out = []
        for act, datasets in self.activities_for(rule, subject):
            relevant = []
            for d in datasets:
                node = self.graph.nodes[d]
                if p.get("unless_dataset_has") and node.values(p["unless_dataset_has"]):
                    continue
                if all(_matches(node.values(k), v) for k, v in p.get("applies_if_dataset", {}).items()):
                    relevant.append(d)
            if not relevant:
                continue
            regions = _lower(act.values(p["activity_attribute"]))
            if not regions:
                if p["missing_attribute"] == "violation":
                    out.append(self._v(rule, act, relevant, p["activity_attribute"],
                                       f"no compute region declared; allowed: {sorted(allowed)}"))
            elif not regions <= allowed:
                out.append(self._v(rule, act, relevant, p["activity_attribute"],
                                   f"region {sorted(regions - allowed)} is not allowed for this data "
                                   f"(allowed: {sorted(allowed)})"))
        return out

    def _check_use_not_prohibited(self, rule: Rule, subject: Node) -> list[Violation]:
        m_attr, d_attr = rule.params["model_attribute"], rule.params["dataset_attribute"]
        uses = _lower(subject.values(m_attr))
        bad = [d for d in self.scope(rule, subject) if uses & _lower(self.graph.nodes[d].values(d_attr))]
        if not bad:
            return []
        hit = sorted(uses & set().union(*(_lower(self.graph.nodes[d].values(d_attr)) for d in bad)))
        return [self._v(rule, subject, bad, d_attr, f"intended use {hit} is prohibited by the data")]

    def _check_license_compatible(self, rule: Rule, subject: Node) -> list[Violation]:
        p = rule.params
        uses = _lower(subject.values(p["model_attribute"]))
        incompatible = {k.lower(): _lower(v) for k, v in p["incompatible"].items()}
        out = []
        for use in sorted(uses & set(incompatible)):
            bad = [d for d in self.scope(rule, subject)
                   if _lower(self.graph.nodes[d].values(p["dataset_attribute"])) & incompatible[use]]
            if bad:
                lic = sorted(set().union(*(_lower(self.graph.nodes[d].values(p["dataset_attribute"]))
                                           for d in bad)) & incompatible[use])
                out.append(self._v(rule, subject, bad, p["dataset_attribute"],
                                   f"licence {lic} does not allow {use} use"))
        return out

    def _check_required_attributes(self, rule: Rule, subject: Node) -> list[Violation]:
        out = []
        for d in self.scope(rule, subject):
            missing = [a for a in rule.params["attributes"] if not self.graph.nodes[d].values(a)]
            if missing:
                out.append(self._v(rule, subject, [d], missing[0], "missing " + ", ".join(
                    self.graph.short(m) for m in missing)))
        return out

    def _check_before_expiry(self, rule: Rule, subject: Node) -> list[Violation]:
        a_attr, d_attr = rule.params["activity_attribute"], rule.params["dataset_attribute"]
        out = []
        for act, datasets in self.activities_for(rule, subject):
            starts = [t for t in map(parse_time, act.values(a_attr)) if t is not None]
            for d in datasets:
                expiries = [t for t in map(parse_time, self.graph.nodes[d].values(d_attr)) if t is not None]
                if not expiries:
                    continue
                expiry = min(expiries)
                if not starts:
                    out.append(self._v(rule, act, [d], a_attr, f"no start time; consent expires {expiry.isoformat()}"))
                elif min(starts) >= expiry:
                    out.append(self._v(rule, act, [d], d_attr, f"started {min(starts).isoformat()}, "
                                       f"after consent expired {expiry.isoformat()}"))
        return out


def evaluate(policy: Policy, graph: Graph) -> list[Violation]:
    """Every violation of ``policy`` in ``graph``, de-duplicated, in a stable order."""
    seen: dict[tuple[Any, ...], Violation] = {}
    for v in Evaluator(policy, graph).evaluate():
        seen.setdefault((v.rule, v.subject, v.datasets, v.attribute, v.reason), v)
    return sorted(seen.values(), key=lambda v: (v.rule, v.subject, v.datasets))


@dataclass
class Report:
    """The verdict of a policy over some files."""

    policy: Policy
    files: list[str]
    violations: list[Violation]

    @property
    def verdict(self) -> str:
        return "deny" if self.violations else "allow"

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.name, "version": self.policy.version, "verdict": self.verdict,
                "files": self.files, "violations": [v.as_dict() for v in self.violations]}


def check(paths: Iterable[str | Path], policy: str | Path | Policy) -> Report:
    """After the fact: evaluate ``policy`` over PROV-JSON files (one merged view)."""
    from .provgraph import expand_dirs, load_graph

    pol = load_policy(policy)
    files = [str(p) for p in expand_dirs(paths)]
    return Report(pol, files, evaluate(pol, load_graph(files)))

