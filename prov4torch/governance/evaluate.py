"""Evaluating a policy over a provenance graph (DESIGN §5).

One evaluator serves both uses: at runtime on the run's own record (plus a virtual
"model this run will produce"), and after the fact on any PROV-JSON files. Names
are compared as expanded IRIs; an attribute with several values matches when any
value matches.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit.graph import PROV, TYPE, Edge, Graph, Node
from ..audit.load import expand_dirs, load_graph, no_cycle_collection
from ..provjson import NAMESPACE as P4T
from . import licences
from .policy import NOT_PROCESSING, PROVISIONAL_ROLES, ROLE_AXIS, Policy, Rule, load_policy
from .tags import NO_CONSENT, jurisdictions

JURISDICTION = P4T + "jurisdiction"

# a model saved before its data was attached is not (yet) a model without data: judged when the run ends
AFTER_THE_FACT = {"model_has_data"}


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



def _matches(values: Iterable[Any], wanted: Any) -> bool:
    """Whether any of ``values`` is ``wanted`` (or, for a list, any of its items)."""
    if isinstance(wanted, list):
        values = list(values)
        return any(_matches(values, w) for w in wanted)
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


_EMPTY: list[str] = []


def _without(found: list[str], item: str) -> list[str]:
    """The sorted list ``found`` less ``item``: ``found`` itself when it does not hold it (shared, not copied)."""
    i = bisect.bisect_left(found, item)
    return [*found[:i], *found[i + 1:]] if i < len(found) and found[i] == item else found


def _within(small: list[str], big: list[str]) -> bool:
    """Whether every item of the sorted list ``small`` is in the sorted list ``big`` (a binary search each: the
    cost follows the smaller list, as a frozenset's ``<=`` did)."""
    if len(small) > len(big):
        return False
    for item in small:
        i = bisect.bisect_left(big, item)
        if i == len(big) or big[i] != item:
            return False
    return True


class Evaluator:
    """Evaluates a policy over one graph; lineage walks are cached per subject."""

    def __init__(self, policy: Policy, graph: Graph) -> None:
        self.policy = policy
        self.graph = graph
        self.datasets = {n.id for n in graph.of_type(policy.dataset_classes)}
        self.models = [n for n in graph.of_type(policy.model_classes)]
        self.model_ids = {n.id for n in self.models}
        self._upstream: dict[str, dict[str, int]] = {}
        self._used: dict[str, list[Edge]] | None = None
        # the datasets upstream of each node, memoised over the whole graph (a long fine-tune chain is linear,
        # not quadratic): one table following every use, one following a model's training uses only
        # (sorted lists, ~5x smaller than frozensets: a store of many fine-tune chains holds one per model)
        self._data_all: dict[str, list[str]] = {}
        self._data_trained: dict[str, list[str]] = {}
        self._last_scope: tuple[tuple[str, bool] | None, list[str]] = (None, [])
        # what a rule finds in one data set, by the list's identity: the memoised upstream lists are shared along
        # a chain, so a rule judges each distinct set once, not once per model (values keep their keys alive)
        self._shared: dict[int, list[str]] = {}  # the lists scope gave, by their own identity
        self._found: dict[tuple[str, int], tuple[list[str], Any]] = {}
        self._lowered: dict[tuple[str, str], frozenset[str]] = {}
        self._allowed: dict[str, frozenset[str]] = {}  # a region rule's allowed regions, lower case
        self._within: dict[str, list[Any]] = {}  # a node's jurisdictions with those they are within
        self._applies: dict[str, dict[str, bool]] = {}  # a region rule's verdict on whether it applies to data
        self.runtime = False  # judging a run still going on (the gate): inferred roles may not be settled yet

    def low(self, nid: str, attr: str) -> frozenset[str]:
        """A node's values of ``attr``, as lower-case strings (memoised: rules ask the same of each dataset)."""
        key = (nid, attr)
        out = self._lowered.get(key)
        if out is None:
            out = self._lowered[key] = frozenset(_lower(self.values(nid, attr)))
        return out

    def values(self, nid: str, attr: str) -> list[Any]:
        """A node's values of ``attr`` as rules match them: a jurisdiction with those it is within (DE: EU, EEA;
        US-CA: US), so a member state's or a subdivision's code meets the rules written for the EU or a country."""
        values = self.graph.nodes[nid].values(attr)
        if attr != JURISDICTION or not values:
            return values
        out = self._within.get(nid)
        if out is None:
            out = self._within[nid] = sorted(jurisdictions(values))
        return out

    def model_uses(self, subject: Node, attr: str) -> tuple[frozenset[str], str]:
        """A model's intended uses (lower case), and how they were found for a reason's text: its own ``attr``;
        when it declares none, the purpose of the run that made it -- a model trained for a commercial purpose
        is for commercial use, so leaving ``intended_use`` out does not pass a licence or prohibited-purpose
        rule that the run's declared purpose breaks."""
        own = _lower(subject.values(attr))
        if own or "entity" not in subject.kinds:
            return frozenset(own), ""
        purposes: frozenset[str] = frozenset()
        for a in self.graph.up["wasGeneratedBy"].get(subject.id, ()):
            node = self.graph.nodes.get(a)
            if node is not None and "activity" in node.kinds:
                purposes |= self.low(a, P4T + "purpose")
        return purposes, " (the purpose of the run that made it: it declares no intended use)"

    def per_set(self, rule: Rule, datasets: list[str], find: Callable[[list[str]], Any]) -> Any:
        """``find(datasets)`` for ``rule``, once per distinct list object ``scope`` returned (any other list:
        each time)."""
        if self._shared.get(id(datasets)) is not datasets:
            return find(datasets)
        key = (rule.id, id(datasets))
        hit = self._found.get(key)
        if hit is None or hit[0] is not datasets:
            hit = self._found[key] = (datasets, find(datasets))
        return hit[1]

    def upstream(self, nid: str) -> dict[str, int]:
        """What ``nid`` comes from over the policy's lineage relations. From a model, with ``lineage_roles`` set,
        a run's ``used`` edge counts only for those roles: a model was trained on its run's training and
        validation data, not on the data the run only tested it with."""
        if nid not in self._upstream:
            roles = self.policy.lineage_roles
            if roles is not None and nid in self.model_ids:
                self._upstream[nid] = self._trained_on(nid, roles)
            else:
                self._upstream[nid] = self.graph.walk(nid, self.policy.lineage, "up")
        return self._upstream[nid]

    def _trained_on(self, start: str, roles: frozenset[str]) -> dict[str, int]:
        """``Graph.walk`` upstream, but a ``used`` edge is followed only when one of its roles is in ``roles``
        (or it has none). Iterative, each node once."""
        graph = self.graph
        relations = [r for r in self.policy.lineage if r in graph.up]
        seen = {start: 0}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            for rel in relations:
                for nxt in graph.up[rel].get(current, ()):
                    if nxt in seen:
                        continue
                    if rel == "used":
                        used_roles = self.roles(current, nxt)
                        if used_roles and not used_roles & roles:
                            continue
                    seen[nxt] = seen[current] + 1
                    queue.append(nxt)
        return seen

    def candidates(self, target: str) -> list[Node]:
        """The nodes rules of ``target`` may judge (an activity only when it processed data: ``applies``)."""
        if target == "model":
            return self.models
        if target == "dataset":
            return [self.graph.nodes[d] for d in sorted(self.datasets)]
        return [a for a in self.graph.activities() if not a.types() & NOT_PROCESSING]

    def applies(self, rule: Rule, subject: Node) -> bool:
        """Activities are judged when they processed data: directly, or (lineage scope) through what they used;
        a checkpoint of unknown lineage is judged by itself, data or not."""
        return rule.target != "activity" or rule.check == "lineage_known" or bool(self.scope(rule, subject))

    def _direct(self, nid: str) -> list[str]:
        """The data an activity used itself -- datasets, and checkpoints, which carry the governance inherited
        from their lineage and are judged as data when used (a fine-tune, an evaluation, an export)."""
        node = self.graph.nodes[nid]
        if "activity" in node.kinds:
            used = self.graph.up["used"].get(nid, ())
            return sorted(self.datasets.intersection(used) | self.model_ids.intersection(used))
        if nid in self.datasets:
            return [nid]
        return sorted(self.datasets.intersection(self.graph.up["wasDerivedFrom"].get(nid, ())))

    def scope(self, rule: Rule, subject: Node) -> list[str]:
        if rule.scope == "direct":
            return self._direct(subject.id)
        key = (subject.id, self.policy.lineage_roles is not None and subject.id in self.model_ids)
        if key != self._last_scope[0]:  # rules of one subject follow each other: kept for the next one
            found = self.data_upstream(*key)
            if subject.id in self.datasets:
                found = sorted({*found, subject.id})
            self._shared[id(found)] = found  # one list per distinct set (shared along a chain): per_set's key
            self._last_scope = (key, found)
        return self._last_scope[1]

    def _parents(self, node: str, trained: bool) -> list[str]:
        graph, roles = self.graph, self.policy.lineage_roles
        out: list[str] = []
        for rel in self.policy.lineage:
            ups = list(graph.up[rel].get(node, ())) if rel in graph.up else []
            if trained and rel == "used" and roles is not None:
                ups = [u for u in ups if not (r := self.roles(node, u)) or r & roles]
            out.extend(ups)
        return out

    def data_upstream(self, start: str, trained: bool = False) -> list[str]:
        """The datasets upstream of ``start`` over the policy's lineage relations (``trained``: a run's ``used``
        counts only in the policy's ``lineage_roles``), excluding ``start`` itself. Memoised for every node
        on the way, in one iterative post-order pass: a node with one parent that adds nothing shares its
        parent's set, so a 10^6-model chain costs memory linear in its length. A cycle (not PROV, but
        possible in a document from elsewhere) falls back to a plain walk for that start."""
        memo = self._data_trained if trained else self._data_all
        if start in memo:
            found = memo[start]
            return _without(found, start)  # the memo's own list when it can: shared
        made: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str] | None]] = [(start, None)]
        while stack:
            node, parents = stack.pop()
            if node in memo:
                continue
            if parents is None:
                on_path.add(node)
                parents = self._parents(node, trained)
                stack.append((node, parents))
                for p in parents:
                    if p in on_path:  # a cycle: no memo from this pass, walk instead
                        for n in made:
                            del memo[n]
                        reached = self.graph.walk(start, self.policy.lineage, "up")
                        return sorted(self.datasets.intersection(reached) - {start})
                    if p not in memo:
                        stack.append((p, None))
                continue
            on_path.discard(node)
            sets = list({id(s): s for s in (memo[p] for p in parents) if s}.values())
            own = node in self.datasets
            largest = max(sets, key=len) if sets else _EMPTY
            if not own and all(s is largest or _within(s, largest) for s in sets):
                memo[node] = largest  # adds nothing: shared, not copied
            else:
                memo[node] = sorted(set().union(*sets, (node,) if own else ()))
            made.append(node)
        return _without(memo[start], start)

    def activities_for(self, rule: Rule, subject: Node) -> list[tuple[Node, list[str]]]:
        """(activity, datasets it used that are in scope) pairs a purpose/region/time rule judges."""
        if "activity" in subject.kinds:
            return [(subject, self.scope(rule, subject))]  # the scope's own list: rules memoise on it
        in_scope = set(self.scope(rule, subject))
        acts = [self.graph.nodes[a] for a in self.upstream(subject.id) if "activity" in self.graph.nodes[a].kinds]
        out = []
        for act in acts:
            used = set(self.graph.up["used"].get(act.id, ())) | set(self.upstream(act.id))
            ds = sorted(used & in_scope)
            if ds:
                out.append((act, ds))
        return out

    def evaluate(self, runtime: bool = False) -> list[Violation]:
        """Every violation; ``runtime``: skip the checks that only mean something once a run is over."""
        self.runtime = runtime
        out: list[Violation] = []
        for target in ("model", "dataset", "activity"):  # subject by subject: a subject's scope is found once
            rules = [r for r in self.policy.rules if r.target == target
                     and not (runtime and r.check in AFTER_THE_FACT)]
            if not rules:
                continue
            for subject in self.candidates(target):
                for rule in rules:
                    if self.applies(rule, subject):
                        out.extend(getattr(self, f"_check_{rule.check}")(rule, subject))
        return out

    def _v(self, rule: Rule, subject: Node, datasets: Iterable[str], attribute: str, reason: str) -> Violation:
        g = self.graph
        return Violation(rule.id, rule.description, g.short(subject.id),
                         tuple(g.short(d) for d in sorted(datasets)), g.short(attribute), reason)

    # -- the seven checks -----------------------------------------------------------------------
    def _check_forbid_combination(self, rule: Rule, subject: Node) -> list[Violation]:
        attr, groups = rule.params["attribute"], rule.params["groups"]
        lowered = [_lower(group) for group in groups]

        def find(datasets: list[str]) -> tuple[list[str], str] | None:
            hits: dict[int, set[str]] = {}
            for d in datasets:
                values = self.low(d, attr)
                for i, group in enumerate(lowered):
                    if values & group:
                        hits.setdefault(i, set()).add(d)
            if len(hits) < 2:
                return None
            return sorted(set().union(*hits.values())), " + ".join("/".join(groups[i]) for i in sorted(hits))

        found = self.per_set(rule, self.scope(rule, subject), find)
        if found is None:
            return []
        return [self._v(rule, subject, found[0], attr, f"combines data from {found[1]}")]

    def used_by(self, activity: str) -> list[Edge]:
        """The ``used`` edges of ``activity``, from an index built in one pass over the edges (a large document
        has millions: never a pass per activity)."""
        if self._used is None:
            self._used = {}
            for e in self.graph.edges:
                if e.relation == "used":
                    self._used.setdefault(e.down, []).append(e)
        return self._used.get(activity, [])

    def roles(self, activity: str, dataset: str) -> set[str]:
        """The roles (local names, lower case) with which ``activity`` used ``dataset`` directly."""
        return {re.split(r"[#/:]", str(r))[-1].lower()
                for e in self.used_by(activity) if e.up == dataset for r in e.attrs.get(PROV + "role", [])}

    def _check_purpose_in_consent(self, rule: Rule, subject: Node) -> list[Violation]:
        """Two axes (DESIGN §5): a use's *role* (training, validation, testing) must be among the consent's
        role values, when it names any; the activity's *purpose* must be among its purpose values (research,
        commercial, ...), when it names any -- a consent that names only one axis leaves the other free."""
        a_attr, d_attr = rule.params["activity_attribute"], rule.params["dataset_attribute"]
        role_purposes: dict[str, str] = rule.params["role_purposes"]
        out = []
        for act, datasets in self.activities_for(rule, subject):
            declared = _lower(act.values(a_attr))
            for d in datasets:
                consent = self.low(d, d_attr)
                if not consent:
                    continue
                role_consent, purpose_consent = consent & set(ROLE_AXIS), consent - set(ROLE_AXIS)
                if consent == {NO_CONSENT}:
                    out.append(self._v(rule, act, [d], d_attr, "the data's sources share no consented use "
                                       "(consent scope 'none'): no processing is within it"))
                    continue
                for role in sorted(self.roles(act.id, d)):
                    axis = role_purposes.get(role, role)
                    # a run going on: an inferred evaluation may yet prove validation (PROVISIONAL_ROLES); its
                    # settled role is judged when known -- at the next optimizer step, or at the run's end
                    axes = {axis, *PROVISIONAL_ROLES.get(role, ())} if self.runtime else {axis}
                    if role_consent and not axes & role_consent:
                        shown = " or ".join(sorted(axes - {role}))
                        how = f"used as {role}" + (f" ({shown})" if shown else "")
                        out.append(self._v(rule, act, [d], d_attr, f"{how}: not within the consent scope "
                                           f"{sorted(consent)}"))
                if not purpose_consent:
                    continue
                if not declared:
                    out.append(self._v(rule, act, [d], a_attr, "the activity declares no purpose, "
                                       f"but the data is consented only for {sorted(consent)}"))
                elif not declared & consent:
                    out.append(self._v(rule, act, [d], d_attr, f"purpose {sorted(declared)} is not "
                                       f"within the consent scope {sorted(consent)}"))
        return out

    def _check_no_tag_conflict(self, rule: Rule, subject: Node) -> list[Violation]:
        """Data whose tag sources disagree (``p4t:tagConflict``): combined restrictively when recorded; a policy
        with this rule refuses to use it until the sources agree."""
        out = []
        for d in self.scope(rule, subject):
            conflicts = [str(c) for c in self.graph.nodes[d].values(P4T + "tagConflict")]
            if conflicts:
                out.append(self._v(rule, subject, [d], P4T + "tagConflict", "its tag sources disagree: "
                                   + "; ".join(conflicts)[:300]))
        return out

    def _check_use_within_consent(self, rule: Rule, subject: Node) -> list[Violation]:
        """A model's intended use (the purpose axis) is among the purposes every dataset in its lineage was
        consented for (datasets whose consent names no purpose are skipped)."""
        m_attr, d_attr = rule.params["model_attribute"], rule.params["dataset_attribute"]
        uses = _lower(subject.values(m_attr)) - set(ROLE_AXIS)  # no run purpose here: purpose_in_consent judges it
        if not uses:
            return []
        out = []
        for d in self.scope(rule, subject):
            consent = self.low(d, d_attr)
            purposes = consent - set(ROLE_AXIS)
            if purposes and not uses <= purposes:
                out.append(self._v(rule, subject, [d], d_attr, f"intended use {sorted(uses - purposes)} is not "
                                   f"within the consent scope {sorted(consent)} of data it was trained on"))
        return out

    def _check_lineage_known(self, rule: Rule, subject: Node) -> list[Violation]:
        """A checkpoint used without known lineage: its data cannot be checked, so it is not allowed."""
        if "activity" not in subject.kinds:
            return []
        attr = rule.params["attribute"]
        out = []
        for e in self.used_by(subject.id):
            if e.up not in self.model_ids:
                continue
            if any(v is False or str(v).lower() == "false" for v in e.attrs.get(attr, [])):
                out.append(self._v(rule, subject, [e.up], attr, f"checkpoint {self.graph.short(e.up)} was used "
                                   "without known lineage (the data it was trained on is unknown); declare its "
                                   "origin: prov4torch.declare_checkpoint(path, ...) or a [[checkpoint]] entry in "
                                   "a tags file (prov4torch run --data-tags FILE)"))
            elif self.policy.require_verified_lineage and not any(
                    v is True or str(v).lower() == "true" for v in e.attrs.get(P4T + "lineageVerified", [])):
                out.append(self._v(rule, subject, [e.up], P4T + "lineageVerified", f"checkpoint "
                                   f"{self.graph.short(e.up)} was used with lineage no trusted signature or index "
                                   "vouches for (the policy requires verified lineage); sign its card with a "
                                   "trusted key (prov4torch keys init) or list the signer in trusted_keys"))
        return out

    def _check_model_has_data(self, rule: Rule, subject: Node) -> list[Violation]:
        """A model with no dataset in its lineage was trained on undeclared data."""
        if subject.values(P4T + "prospective") or self.scope(rule, subject):
            return []
        return [self._v(rule, subject, [], TYPE, "no dataset in its lineage: it was trained on undeclared data "
                        "(record the data with log_dataset/track, or run under prov4torch run)")]

    def _check_region_allowed(self, rule: Rule, subject: Node) -> list[Violation]:
        p = rule.params
        allowed = self._allowed.get(rule.id)
        if allowed is None:
            allowed = self._allowed[rule.id] = frozenset(_lower(p["allowed"]))
        out = []
        applies = self._applies.setdefault(rule.id, {})

        def applies_to(d: str) -> bool:  # memoised per rule: a dataset is met once per lineage that holds it
            hit = applies.get(d)
            if hit is None:
                hit = applies[d] = not (p.get("unless_dataset_has") and self.graph.nodes[d].values(
                    p["unless_dataset_has"])) and all(_matches(self.values(d, k), v)
                                                      for k, v in p.get("applies_if_dataset", {}).items())
            return hit

        def find(datasets: list[str]) -> list[str]:
            return [d for d in datasets if applies_to(d)]

        for act, datasets in self.activities_for(rule, subject):
            relevant = self.per_set(rule, datasets, find)
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
        uses, how = self.model_uses(subject, m_attr)
        if not uses:
            return []
        bad = [d for d in self.scope(rule, subject) if uses & self.low(d, d_attr)]
        if not bad:
            return []
        hit = sorted(uses & set().union(*(self.low(d, d_attr) for d in bad)))
        return [self._v(rule, subject, bad, d_attr, f"intended use {hit}{how} is prohibited by the data")]

    def _check_license_compatible(self, rule: Rule, subject: Node) -> list[Violation]:
        """Licences are SPDX expressions: every operand of an AND applies, an OR is satisfied by any operand;
        an expression that cannot be parsed is reported (a violation when ``unknown_license = "violation"``)."""
        p = rule.params
        uses, how = self.model_uses(subject, p["model_attribute"])
        incompatible = {k.lower(): _lower(v) for k, v in p["incompatible"].items()}
        out = []
        for use in sorted(uses & set(incompatible)):
            for d in self.scope(rule, subject):
                for text in map(str, self.graph.nodes[d].values(p["dataset_attribute"])):
                    verdict = licences.allows(text, incompatible[use])
                    if verdict is False:
                        out.append(self._v(rule, subject, [d], p["dataset_attribute"],
                                           f"licence {text!r} does not allow {use} use{how}"))
                    elif verdict is None and p["unknown_license"] == "violation":
                        out.append(self._v(rule, subject, [d], p["dataset_attribute"],
                                           f"licence {text!r} is not an SPDX expression: whether it allows {use} "
                                           f"use{how} cannot be told"))
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


def evaluate(policy: Policy, graph: Graph, *, runtime: bool = False) -> list[Violation]:
    """Every violation of ``policy`` in ``graph``, de-duplicated, in a stable order.

    ``runtime``: the graph is a run still going on (the gate), so checks in ``AFTER_THE_FACT`` wait for the end.
    """
    seen: dict[tuple[Any, ...], Violation] = {}
    for v in Evaluator(policy, graph).evaluate(runtime):
        seen.setdefault((v.rule, v.subject, v.datasets, v.attribute, v.reason), v)
    return sorted(seen.values(), key=lambda v: (v.rule, v.subject, v.datasets))


@dataclass
class Report:
    """The verdict of a policy over some files."""

    policy: Policy
    files: list[str]
    violations: list[Violation]
    prevented: list[dict[str, Any]] = field(default_factory=list)  # uses an enforced policy stopped at runtime

    @property
    def verdict(self) -> str:
        return "deny" if self.violations else "allow"

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.name, "version": self.policy.version, "verdict": self.verdict,
                "files": self.files, "violations": [v.as_dict() for v in self.violations],
                "prevented": self.prevented}


def judge(policy: str | Path | Policy) -> Callable[[Graph], list[Violation]]:
    """The policy as a function of a graph (for ``audit.render``'s red marks)."""
    pol = load_policy(policy)
    return lambda graph: evaluate(pol, graph)


def check(paths: Iterable[str | Path], policy: str | Path | Policy) -> Report:
    """After the fact: evaluate ``policy`` over PROV-JSON files (one merged view)."""
    pol = load_policy(policy)
    files = [str(p) for p in expand_dirs(paths)]
    with no_cycle_collection():  # the graph lives and dies inside: never traversed by the cycle collector
        graph = load_graph(files)
        return Report(pol, files, evaluate(pol, graph), prevented(graph))


def prevented(graph: Graph) -> list[dict[str, Any]]:
    """The denied decisions an enforced policy acted on while a run went on (the use did not happen): rule,
    reason, data, and the run that was stopped."""
    out = []
    for node in graph.of_type([P4T + "PolicyDecision"]):
        verdict = {str(v).lower() for v in node.values(P4T + "verdict")}
        mode = {str(v).lower() for v in node.values(P4T + "mode")}
        if "deny" not in verdict or "enforce" not in mode:
            continue
        acts = [graph.short(a) for a in graph.walk(node.id, ("wasGeneratedBy", "wasInformedBy"), "up")
                if "activity" in graph.nodes[a].kinds and not graph.nodes[a].types() & NOT_PROCESSING]
        out.append({"decision": graph.short(node.id), "rule": ", ".join(map(str, node.values(P4T + "rule"))),
                    "reason": "; ".join(map(str, node.values(P4T + "reason"))),
                    "datasets": [graph.short(str(d)) for d in node.values(P4T + "offendingDataset")],
                    "activity": ", ".join(sorted(acts)[:3])})
    return sorted(out, key=lambda p: (p["activity"], p["decision"]))

