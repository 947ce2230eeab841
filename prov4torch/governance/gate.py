"""Runtime policy enforcement: the same evaluator as ``prov4torch check``, on the live run.

When a dataset or checkpoint is attached (and before the first batch of a tracked
DataLoader), the run hands over a ``RunView``: its record so far as PROV-JSON, its
activity, what a model it produces would derive from, and its intended use. A virtual
entity stands for "the model this run will produce", and the policy is evaluated.
Every evaluation is recorded as a decision through the ``record`` callable the run
hands in. In ``enforce`` mode a deny raises ``PolicyViolation`` before any compute on
that data, and the run ends BLOCKED; in ``audit`` mode it warns once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..audit.graph import Graph
from ..audit.load import add_document
from ..errors import InvalidValueError, PolicyViolation, PolicyWarning
from ..events import Decision
from ..provjson import QName, attributes
from ..warn import warn
from .evaluate import Violation, evaluate
from .policy import Policy, load_policy

MODES = ("enforce", "audit")
PROSPECTIVE = "prospective-model"

Recorder = Callable[[Decision], None]


@dataclass
class RunView:
    """What the gate needs to know of a live run."""

    document: dict[str, Any]  # the run's PROV-JSON so far
    activity: str  # the rank activity's id in that document
    sources: list[str] = field(default_factory=list)  # what a model it produces derives from
    intended_use: str | None = None


class RuntimePolicy:
    """A loaded policy in force on one run; ``record`` takes decision events, ``clock`` times them."""

    def __init__(self, spec: Any, mode: str | None, record: Recorder, clock: Callable[[], float]) -> None:
        self.policy: Policy = load_policy(spec)
        mode = mode or "enforce"
        if mode not in MODES:
            raise InvalidValueError(f"policy mode must be 'enforce' or 'audit', got {mode!r}", value=mode)
        self.mode = mode
        self.record = record
        self.clock = clock
        self.blocked: list[Violation] = []
        self.blocked_datasets: set[str] = set()
        self._warned: set[tuple[Any, ...]] = set()
        self.id = f"p4t:policy/sha256-{self.policy.sha256}" if self.policy.sha256 else "p4t:policy/inline"

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.policy.name, "version": self.policy.version,
                "source": self.policy.source, "sha256": self.policy.sha256, "mode": self.mode}

    @staticmethod
    def graph(view: RunView) -> Graph:
        """The run's record so far as a provenance graph, plus the prospective model."""
        doc = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in view.document.items()}
        prospective = f"{view.activity}/{PROSPECTIVE}"
        doc.setdefault("entity", {})[prospective] = {
            "prov:type": {"$": "mls:Model", "type": "xsd:QName"}, "p4t:prospective": True,
            **({"p4t:intendedUse": view.intended_use} if view.intended_use else {}),
        }
        doc.setdefault("wasGeneratedBy", {})["_:prospective-gen"] = {
            "prov:entity": prospective, "prov:activity": view.activity}
        derived = doc.setdefault("wasDerivedFrom", {})
        for i, src in enumerate(view.sources):
            derived[f"_:prospective-{i}"] = {"prov:generatedEntity": prospective, "prov:usedEntity": src}
        g = Graph()
        add_document(g, doc, "<running>")
        return g

    def final(self, view: RunView) -> None:
        """At the end of the run: every rule, the after-the-fact ones too; recorded and warned, never raised
        (the compute has happened: the record says so, and ``prov4torch check`` denies it)."""
        if self.blocked:
            return  # the run was stopped: its decision is on record already
        violations = evaluate(self.policy, self.graph(view))
        if violations:  # an allow at the end adds nothing to the decisions already taken
            self._record(violations, "end_run", [])
        for v in violations:
            self._warn(v, "finding")

    def check(self, view: RunView, trigger: str, subjects: list[str], role: str | None = None) -> None:
        """Evaluate now; record the decision (``role``: the use of the subject data it was taken on); raise
        (enforce) or warn (audit) on a deny."""
        violations = evaluate(self.policy, self.graph(view), runtime=True)
        self._record(violations, trigger, subjects, role)
        if not violations:
            return
        if self.mode == "audit":
            for v in violations:
                self._warn(v, "audit")
            return
        self.blocked.extend(violations)
        self.blocked_datasets.update(d for v in violations for d in v.datasets)
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise PolicyViolation(
            f"policy {self.policy.name!r} blocks this use of data: rule {first.rule!r}: "
            f"{self._subject(first.subject)}: {first.reason}; datasets: {', '.join(first.datasets)}{more}",
            violations,
        )

    def _warn(self, v: Violation, kind: str) -> None:
        key = (v.rule, v.subject, v.datasets)
        if key not in self._warned:
            self._warned.add(key)
            # at the user's line; a warning (even an error-filtered one) never stops the run
            warn(f"prov4torch policy {self.policy.name!r} ({kind}): {v.rule}: {self._subject(v.subject)}: {v.reason}",
                 PolicyWarning)

    def _record(self, violations: list[Violation], trigger: str, subjects: list[str], role: str | None = None) -> None:
        verdict = "deny" if violations else "allow"
        attrs: dict[str, Any] = {
            "p4t:verdict": verdict,
            "p4t:trigger": trigger,
            "p4t:checkedRole": QName(f"p4t:{role}") if role else None,
            "p4t:mode": self.mode,
            "p4t:rule": sorted({v.rule for v in violations}),
            "p4t:reason": [f"{v.rule}: {self._subject(v.subject)}: {v.reason}" for v in violations],
            "p4t:offendingDataset": sorted({d for v in violations for d in v.datasets}),
        }
        self.record(Decision(time=self.clock(), policy_id=self.id,
                             policy_attrs=attributes({"prov:type": QName("p4t:Policy"), "prov:label": self.policy.name,
                                                      "p4t:version": self.policy.version,
                                                      "p4t:sha256": self.policy.sha256 or None}),
                             datasets=list(subjects), role=role, attrs=attributes(attrs)))

    @staticmethod
    def _subject(subject: str) -> str:
        return "the model this run will produce" if subject.endswith(PROSPECTIVE) else subject

    def gate(self, dataset_id: str) -> None:
        """Before data is delivered (a batch, an item): nothing more once the run is BLOCKED, in enforce mode.

        A script that caught the ``PolicyViolation`` and goes on, or an iterator opened before the block,
        gets no further data from any tracked source.
        """
        if self.mode == "enforce" and self.blocked:
            v = next((v for v in self.blocked if dataset_id in v.datasets), self.blocked[0])
            raise PolicyViolation(f"policy {self.policy.name!r} blocked this run: rule {v.rule!r}: {v.reason}; "
                                  f"no more data is delivered ({dataset_id})", [v])
