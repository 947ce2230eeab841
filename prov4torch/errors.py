"""prov4torch's exceptions and warnings, all of them (exported from ``prov4torch``).

    Prov4TorchError
    ├── RunStateError        no active run, a run already active, a call after end_run
    ├── InvalidValueError    a bad argument to a public function (keeps .value)
    │   ├── ProvInputError          a file that is not PROV-JSON prov4torch can read (names file and place)
    │   └── UnreadableContentError  data whose content cannot be read to identify it (keeps .problems)
    ├── ConfigError          a bad output directory, environment setting or policy file
    ├── JournalError         an unreadable journal / run directory
    │   └── MalformedEventError     a journal line that is not an event of a known kind and shape
    ├── MergeConflictError   two files declare one id differently
    ├── PolicyViolation      a policy denied this use of data (carries .violations)
    ├── EvidenceError        a signature, envelope, attestation or lineage card that is malformed or fails
    ├── MissingExtraError    an optional tool (Graphviz, NVML) is not installed
    └── GpuUnavailable       NVML or the devices cannot be used (the GPU sampler stops; never raised to the script)

    Warning
    ├── UserWarning
    │   └── PolicyWarning    an audit-mode policy violation: recorded, training goes on
    └── RuntimeWarning
        └── TelemetryWarning a sampler could not read something: training goes on

Everything else prov4torch says while recording is a ``RuntimeWarning`` from ``prov4torch.warn.warn``,
attributed to the user's line, never fatal.

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


class MalformedEventError(JournalError, ValueError):
    """A journal line that is not an event this prov4torch reads (unknown kind, newer version, a missing field
    or a value of the wrong type); readers count and report these, never skip them silently."""


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


class ProvInputError(InvalidValueError):
    """A file that is not PROV-JSON we can read (the message names file and place)."""


class GpuUnavailable(Prov4TorchError):
    """NVML or the devices cannot be used; the GPU sampler stops."""


class PolicyWarning(UserWarning):
    """An audit-mode policy violation: recorded, training goes on."""


class TelemetryWarning(RuntimeWarning):
    """A sampler could not read something; training goes on."""


# -- control flow and file types, raised and caught inside prov4torch ---------------------------------------

class Terminated(BaseException):
    """SIGTERM arrived while a file was being written; cleanup runs, then the process exits as the signal would."""


class ChangedTensor(RuntimeError):
    """A tensor logged as a metric was written to in place before the writer read it (its point is dropped and
    counted: ``record.values.DeviceValue``)."""


class NotRegularFile(OSError):
    """A path that is a FIFO, socket, device or directory where a regular file is expected (never read)."""


class FileTooLarge(OSError):
    """A file larger than the cap its reader sets (read whole, so bounded)."""


class SignalExit(BaseException):
    """Raised in the main thread by a deferred SIGTERM/SIGINT (``prov4torch run``): the runner ends the run
    KILLED, merges and summarises, then exits as the signal would."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class OverBudget(Exception):
    """Hashing a dataset's Python objects went past the budget."""
