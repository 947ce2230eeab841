"""Runtime policy enforcement: the same evaluator as ``prov4torch check``, on the live run.

When a dataset or checkpoint is attached (and before the first batch of a tracked
DataLoader), the run's record so far is built as PROV, a virtual entity stands for
"the model this run will produce" (derived from the training data and base models,
with the run's intended use), and the policy is evaluated. Every evaluation is
recorded as a decision. In ``enforce`` mode a deny raises ``PolicyViolation`` before
any compute on that data, and the run ends BLOCKED; in ``audit`` mode it warns once.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .document import RunRecord, build, run_activity_id
from .errors import InvalidValueError, PolicyViolation
from .policy import Policy, Violation, evaluate, load_policy
from .provgraph import Graph, add_document
from .provjson import QName

if TYPE_CHECKING:
    from .run import Run

MODES = ("enforce", "audit")
PROSPECTIVE = "prospective-model"


class PolicyWarning(UserWarning):
    """An audit-mode policy violation: recorded, training goes on."""


class RuntimePolicy:
    def __init__(self, spec: Any, mode: str | None) -> None:
        self.policy: Policy = load_policy(spec)
        mode = mode or "enforce"
        if mode not in MODES:
            raise InvalidValueError(f"policy mode must be 'enforce' or 'audit', got {mode!r}", value=mode)
        self.mode = mode
        self.blocked: list[Violation] = []
        self.blocked_datasets: set[str] = set()
        self._warned: set[tuple[Any, ...]] = set()
        self.id = f"p4t:policy/sha256-{self.policy.sha256}" if self.policy.sha256 else "p4t:policy/inline"

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.policy.name, "version": self.policy.version,
                "source": self.policy.source, "sha256": self.policy.sha256, "mode": self.mode}

    def graph(self, run: Run) -> Graph:
        """The run's record so far as a provenance graph, plus the prospective model."""
        record = RunRecord.replay(run._history)
        doc = build(record, [], {})
        act = run_activity_id(run.run_id, run.rank)
        prospective = f"{act}/{PROSPECTIVE}"
        sources = run.model_sources()  # the same derivation log_model records
        doc.setdefault("entity", {})[prospective] = {
            "prov:type": {"$": "mls:Model", "type": "xsd:QName"},
            **({"p4t:intendedUse": run.intended_use} if run.intended_use else {}),
        }
        doc.setdefault("wasGeneratedBy", {})["_:prospective-gen"] = {"prov:entity": prospective, "prov:activity": act}
        derived = doc.setdefault("wasDerivedFrom", {})
        for i, src in enumerate(sources):
            derived[f"_:prospective-{i}"] = {"prov:generatedEntity": prospective, "prov:usedEntity": src}
        g = Graph()
        add_document(g, doc, "<running>")
        return g

    def check(self, run: Run, trigger: str, subjects: list[str]) -> None:
        """Evaluate now; record the decision; raise (enforce) or warn (audit) on a deny."""
        violations = evaluate(self.policy, self.graph(run))
        verdict = "deny" if violations else "allow"
        attrs: dict[str, Any] = {
            "p4t:verdict": verdict,
            "p4t:trigger": trigger,
            "p4t:mode": self.mode,
            "p4t:rule": sorted({v.rule for v in violations}),
            "p4t:reason": [f"{v.rule}: {self._subject(v.subject)}: {v.reason}" for v in violations],
            "p4t:offendingDataset": sorted({d for v in violations for d in v.datasets}),
        }
        run._event({"t": "decision", "time": run._clock(), "policy_id": self.id,
                    "policy_attrs": {"prov:type": QName("p4t:Policy"), "prov:label": self.policy.name,
                                     "p4t:version": self.policy.version, "p4t:sha256": self.policy.sha256 or None,
                                     "p4t:path": self.policy.source},
                    "datasets": subjects, "attrs": attrs}, now=True)
        if not violations:
            return
        if self.mode == "audit":
            for v in violations:
                key = (v.rule, v.subject, v.datasets)
                if key not in self._warned:
                    self._warned.add(key)
                    warnings.warn(f"prov4torch policy {self.policy.name!r} (audit): {v.rule}: "
                                  f"{self._subject(v.subject)}: {v.reason}", PolicyWarning, stacklevel=4)
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

    @staticmethod
    def _subject(subject: str) -> str:
        return "the model this run will produce" if subject.endswith(PROSPECTIVE) else subject

    def gate(self, dataset_id: str) -> None:
        """Before a batch of ``dataset_id`` leaves a DataLoader: refuse data already blocked."""
        if self.mode == "enforce" and dataset_id in self.blocked_datasets:
            v = next(v for v in self.blocked if self._in(dataset_id, v))
            raise PolicyViolation(f"policy {self.policy.name!r} blocked {dataset_id}: rule {v.rule!r}: "
                                  f"{v.reason}", [v])

    def _in(self, dataset_id: str, v: Violation) -> bool:
        return dataset_id in v.datasets

