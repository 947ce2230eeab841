"""Policies (TOML, DESIGN §5): the format, loaded and validated.

This module owns the format: reading and validating a policy file into ``Policy``
and its ``Rule``s. ``evaluate.py`` applies them to a provenance graph.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..audit.graph import DEFAULT_LINEAGE, UPSTREAM
from ..errors import ConfigError
from ..provjson import PREFIXES, expand_qname
from ..safefs import read_regular

MAX_POLICY_BYTES = 4 << 20  # a policy file is read whole: larger is refused

# prov4torch's structural activities: a policy check reads tags, the job activity links ranks;
# neither processes data, so rules judge the rank activities instead
NOT_PROCESSING = {"https://w3id.org/prov4torch/ns#PolicyCheck", "https://w3id.org/prov4torch/ns#DistributedJob"}
TOP_LEVEL = {"policy", "version", "description", "prefixes", "classes", "lineage", "rules", "trusted_keys",
             "require_verified_lineage", "lineage_roles"}
RULE_COMMON = {"id", "description", "effect", "target", "scope", "check", "maps_to"}
TARGETS = ("model", "dataset", "activity")
SCOPES = ("direct", "lineage")

# check kind -> {parameter: (type description, validator, required)}
_STR = ("a string", lambda v: isinstance(v, str) and bool(v.strip()))
_STRS = ("a list of strings", lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v))
_GROUPS = ("a list of at least two lists of strings",
           lambda v: isinstance(v, list) and len(v) >= 2 and all(_STRS[1](g) for g in v))
_TABLE = ("a table of attribute = value (or a list of values, any of which)", lambda v: isinstance(v, dict)
          and bool(v) and all(isinstance(x, (str, bool, int, float)) or (isinstance(x, list) and x and all(
              isinstance(y, (str, bool, int, float)) for y in x)) for x in v.values()))
_INCOMPAT = ("a table of use = list of licence ids",
             lambda v: isinstance(v, dict) and bool(v) and all(_STRS[1](x) for x in v.values()))
_MISSING = ('"violation" or "ignore"', lambda v: v in ("violation", "ignore"))

_ROLE_PURPOSES = ("a table of role = purpose", lambda v: isinstance(v, dict) and all(
    isinstance(k, str) and isinstance(x, str) for k, x in v.items()))
# the role axis (EU AI Act Art. 3(29)-(31)): what a use of data is in the ML lifecycle; every other consent value
# (research, commercial, ...) is on the purpose axis, judged against the run's purpose
ROLE_AXIS = ("training", "validation", "testing")
# a recorded role -> its place on the role axis: an inferred evaluation is testing (unless the data drives a
# training decision, when the recorder says validation), data of unknown role read with gradients on is
# training, a base model fine-tuned is trained on
# roles the recorder infers before it can know them: while the run goes on, such a use is within consent if any of
# its possible roles is (an evaluation pass is testing, or validation when a training decision follows it); the
# settled role is judged when known (the recorder attaches it again then, and the end-of-run check judges it)
PROVISIONAL_ROLES = {"evaluation": ("testing", "validation")}
DEFAULT_ROLE_PURPOSES = {"training": "training", "testing": "testing", "validation": "validation",
                         "evaluation": "testing", "input": "training", "basemodel": "training"}

CHECKS: dict[str, dict[str, tuple[str, Any, bool]]] = {
    "forbid_combination": {"attribute": (*_STR, True), "groups": (*_GROUPS, True)},
    "purpose_in_consent": {"activity_attribute": (*_STR, True), "dataset_attribute": (*_STR, True),
                           "role_purposes": (*_ROLE_PURPOSES, False)},
    "region_allowed": {
        "applies_if_dataset": (*_TABLE, False), "unless_dataset_has": (*_STR, False),
        "activity_attribute": (*_STR, True), "allowed": (*_STRS, True), "missing_attribute": (*_MISSING, False),
    },
    "use_not_prohibited": {"model_attribute": (*_STR, True), "dataset_attribute": (*_STR, True)},
    "license_compatible": {
        "model_attribute": (*_STR, True), "dataset_attribute": (*_STR, True), "incompatible": (*_INCOMPAT, True),
        "unknown_license": (*_MISSING, False),
    },
    "use_within_consent": {"model_attribute": (*_STR, True), "dataset_attribute": (*_STR, True)},
    "no_tag_conflict": {},
    "required_attributes": {"attributes": (*_STRS, True)},
    "before_expiry": {"activity_attribute": (*_STR, True), "dataset_attribute": (*_STR, True)},
    "lineage_known": {"attribute": (*_STR, False)},
    "model_has_data": {},
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
    trusted_keys: list[str] = field(default_factory=list)  # PEM public keys (paths, relative to the policy file)
    # the uses (roles, local names) that make data part of what a model was trained on, when a lineage walk
    # starts at a model; None: every use (data the producing run only tested on is judged as the run's use)
    lineage_roles: frozenset[str] | None = None
    require_verified_lineage: bool = False  # lineage below a trusted signature counts as unknown


# -- loading -------------------------------------------------------------------------------------

def _err(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}")


def builtin_policy_path(name: str) -> Path | None:
    """The path of a policy shipped with prov4torch (``default``), if ``name`` is one."""
    candidate = resources.files("prov4torch.governance") / "policies" / f"{name}.toml"
    return Path(str(candidate)) if candidate.is_file() else None


def load_policy(spec: str | Path | Policy) -> Policy:
    """A validated policy from a TOML file, or a built-in name such as ``default``."""
    if isinstance(spec, Policy):
        return spec
    if not isinstance(spec, (str, Path)) or not str(spec).strip() or "\0" in str(spec):
        raise ConfigError(f"policy must be a TOML file path or a built-in name such as 'default', got {spec!r:.60}")
    path = Path(spec)
    if not path.exists() and isinstance(spec, str) and "/" not in spec and not spec.endswith(".toml"):
        builtin = builtin_policy_path(spec)
        if builtin is None:
            raise ConfigError(f"policy {spec!r}: no such file and no built-in policy of that name (try 'default')")
        path = builtin
    try:
        raw = read_regular(path, MAX_POLICY_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{path}: policy file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a policy") from None
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
        iri = expand_qname(n, prefixes)
        if iri is None:
            raise _err(source, f"name {n!r}", f"prefix {n.partition(':')[0]!r} is not declared in [prefixes]")
        return iri

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
    keys = data.get("trusted_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k.strip() for k in keys):
        raise _err(source, "field 'trusted_keys'", "expected a list of PEM public key file paths")
    base = Path(source).parent if source != "<policy>" else Path.cwd()
    roles = data.get("lineage_roles")
    if roles is not None and not (isinstance(roles, list) and all(isinstance(r, str) and r for r in roles)):
        raise _err(source, "field 'lineage_roles'", "expected a list of roles (training, validation, ...)")
    verified = data.get("require_verified_lineage", False)
    if not isinstance(verified, bool):
        raise _err(source, "field 'require_verified_lineage'", f"expected true or false, got {verified!r}")
    return Policy(name=name, version=str(version), rules=rules, prefixes=prefixes,
                  dataset_classes=class_set("dataset", "mls:Dataset"),
                  model_classes=class_set("model", "mls:Model"), lineage=tuple(lineage), source=source,
                  trusted_keys=[str((base / Path(k).expanduser()) if not Path(k).expanduser().is_absolute()
                                    else Path(k).expanduser()) for k in keys],
                  require_verified_lineage=verified,
                  lineage_roles=frozenset(r.lower() for r in roles) if roles is not None else None)


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
    if check == "purpose_in_consent":
        params["role_purposes"] = {**DEFAULT_ROLE_PURPOSES, **{k.lower(): v.lower() for k, v in
                                                               params.get("role_purposes", {}).items()}}
    if check == "lineage_known":
        params["attribute"] = expand(params.get("attribute", "p4t:lineageKnown"))
    if check == "license_compatible":
        params.setdefault("unknown_license", "ignore")
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
