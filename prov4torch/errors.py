"""prov4torch's exceptions.

    Prov4TorchError
    ├── RunStateError        no active run, a run already active, a call after end_run
    ├── InvalidValueError    a bad argument to a public function (keeps .value)
    ├── ConfigError          a bad output directory, environment setting or policy file
    ├── JournalError         an unreadable journal / run directory
    ├── MergeConflictError   two files declare one id differently
    ├── PolicyViolation      a policy denied this use of data (carries .violations)
    ├── EvidenceError        a signature, envelope, attestation or lineage card that is malformed or fails
    └── MissingExtraError    an optional tool (Graphviz, NVML) is not installed

Every message says what went wrong, with which value, and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Prov4TorchError(Exception):
    """Base class of every error prov4torch raises on purpose."""


class RunStateError(Prov4TorchError):
    """A call that does not fit the run's state (no run, already active, already ended)."""


class InvalidValueError(Prov4TorchError, ValueError):
    """A public function got a value of the wrong type or form."""

    def __init__(self, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.value = value


class UnreadableContentError(InvalidValueError):
    """Data whose content cannot be read to identify it (special files, loops, dangling links, permissions);
    ``problems`` names each entry. The data is then recorded as unidentified, with the reason."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message, value=list(problems))
        self.problems = list(problems)


class ConfigError(Prov4TorchError):
    """A configuration problem: output directory, environment variable, policy file."""


class JournalError(Prov4TorchError):
    """A run directory or journal that cannot be read."""


class MergeConflictError(Prov4TorchError):
    """Two inputs declare the same identifier with different content."""


class PolicyViolation(Prov4TorchError):
    """A policy rule denied this use of data; ``violations`` lists why."""

    def __init__(self, message: str, violations: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.violations = list(violations)


class EvidenceError(Prov4TorchError):
    """A signature, envelope, attestation or lineage card that is malformed or does not verify."""


class MissingExtraError(Prov4TorchError):
    """An optional external tool or package is missing; the message says how to install it."""
