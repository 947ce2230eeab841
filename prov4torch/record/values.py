"""Checks and conversions of what users pass to the API: names, metric values, steps, times, params.

Every failure is an ``InvalidValueError`` naming the argument and what to give instead.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from .. import env
from ..errors import InvalidValueError, Prov4TorchError
from ..events import MAX_TIME, MIN_TIME

P = ParamSpec("P")
R = TypeVar("R")

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/ :]{0,249}$")  # metric names
CONTEXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")  # metric contexts
PARAM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,249}$")  # params, tags, experiments, model names


def check_name(kind: str, name: Any, pattern: re.Pattern[str]) -> str:
    if not isinstance(name, str):
        raise InvalidValueError(f"{kind} must be a string, got {type(name).__name__} {name!r}", value=name)
    if not pattern.match(name):
        raise InvalidValueError(
            f"invalid {kind} {name!r}: use letters, digits and _ . - / "
            f"(no commas or leading punctuation, at most 250 characters)",
            value=name,
        )
    return name


class DeviceValue:
    """A metric value still on a device: the tensor the writer reads, the stream it was made on (CUDA) and, when the
    tensor is the caller's own (no copy made), its version counter then. The writer orders its read after that
    stream's work (an event it records on it, once per batch), so the hot path neither synchronises nor creates
    an event; a tensor whose version moved before the read was written to in place after it was logged: the
    writer drops that point (counted, with a warning) rather than record a value that was not the logged one."""

    __slots__ = ("stream", "tensor", "version")

    def __init__(self, tensor: Any, stream: Any, version: int | None = None) -> None:
        self.tensor, self.stream, self.version = tensor, stream, version


# devices whose autograd results are read later without a copy (``deferrable``): none unless
# PROV4TORCH_METRIC_BY_REFERENCE=1 (CUDA) -- a CUDA graph's replay (torch.compile's "reduce-overhead", a captured
# training step) overwrites its static outputs without moving their version counter, so a loss read later could be
# the next step's; tests add "cpu" to exercise the path
DEFERRED_DEVICES = {"cuda"} if env.flag(env.METRIC_BY_REFERENCE, False) else set()
SMALL_STORAGE = 64  # bytes: a view into a larger tensor is copied (a reference would keep the large one alive)


def deferrable(value: Any) -> bool:
    """Whether a one-element device tensor can be read by the writer later instead of copied now (no kernel on
    the hot path): an autograd result (``grad_fn``: the loss of a training step) nobody has written to yet
    (version 0), on its own small storage. An accumulator, a no-grad result or a view is copied, as before."""
    return (value.device.type in DEFERRED_DEVICES and value.grad_fn is not None and value._version == 0
            and value.untyped_storage().nbytes() <= SMALL_STORAGE)


class TensorType:
    """``torch.Tensor`` once a metric has been one (None before): the hot path tests ``type(value) is`` it to
    read a CPU loss without a call to ``coerce_metric`` (torch is never imported for it)."""

    cls: Any = None


def reads_user_values(method: Callable[P, R]) -> Callable[P, R]:
    """A call that looks at values the user gave: one that fails when looked at -- its own exception (a class
    raising from ``__getattribute__``, a ``__float__`` that raises), not ours and not the disk's -- is an
    ``InvalidValueError`` naming the call, never an exception from inside prov4torch."""

    @functools.wraps(method)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (Prov4TorchError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - raised by the value itself
            raise InvalidValueError(
                f"{method.__name__}: a value given could not be read ({type(exc).__name__}: {str(exc)[:200]}); "
                "give plain values (numbers, strings, lists, dicts, tensors, paths)") from None

    return checked


def coerce_metric(name: str, value: Any) -> Any:
    """A metric value as float, or a detached copy of a 0-d device tensor (converted later)."""
    try:
        return _coerce_metric(name, value)
    except (Prov4TorchError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - raised by the value itself when looked at
        raise InvalidValueError(f"metric {name!r}: the value could not be read ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); give a number or a one-element tensor", value=name) from None


def _coerce_metric(name: str, value: Any) -> Any:
    if isinstance(value, (int, float)):  # bool included: True is 1.0
        try:
            return float(value)
        except OverflowError:
            raise InvalidValueError(f"metric {name!r}: {str(value)[:20]}... is too large for a float64 metric",
                                    value=value) from None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        TensorType.cls = torch.Tensor
        if value.is_cpu and "cpu" not in DEFERRED_DEVICES:
            try:  # the common case, a 0-d loss on the CPU: .item() (unlike float(t)) never warns
                return float(value.item())
            except (RuntimeError, ValueError, TypeError):
                pass  # several elements, or complex: explained below
        if value.numel() != 1:
            raise InvalidValueError(
                f"metric {name!r}: a tensor metric must hold one number, got shape {tuple(value.shape)}",
                value=value,
            )
        if value.is_complex():
            raise InvalidValueError(f"metric {name!r}: tensor dtype {value.dtype} is not a real number", value=value)
        if deferrable(value):  # the caller's own tensor, read later by the writer: no kernel now
            kept = value.detach()  # a view sharing its storage and version counter, without the graph
            stream = torch.cuda.current_stream(kept.device) if kept.is_cuda else None
            return DeviceValue(kept, stream, kept._version)
        copy = value.detach().clone()  # a device tensor: one async copy kernel, no sync here
        if copy.is_cuda:  # the writer reads it on its own thread and stream, ordered after this stream's copy
            return DeviceValue(copy, torch.cuda.current_stream(copy.device))
        return copy
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise InvalidValueError(
            f"metric {name!r}: value must be a number (int, float, NumPy scalar or one-element tensor), "
            f"got {type(value).__name__} {value!r:.60}",
            value=value,
        )
    try:
        return float(value)
    except Exception as exc:
        raise InvalidValueError(f"metric {name!r}: cannot convert the {type(value).__name__} to a number "
                                f"({type(exc).__name__}: {str(exc)[:100]})", value=value) from exc


def check_step(step: Any) -> int:
    try:
        if isinstance(step, bool):
            raise TypeError
        return int(step.__index__())
    except (AttributeError, TypeError):
        raise InvalidValueError(f"step must be an integer, got {type(step).__name__} {step!r}", value=step) from None


# 1970-01-01 .. 2200-01-01: later is a unit slip (milliseconds), not a time (the journal accepts the same)
MIN_TIMESTAMP, MAX_TIMESTAMP = MIN_TIME, MAX_TIME


def check_timestamp(ts: Any) -> float:
    """Unix seconds between 1970 and 2200 (a documented window), or an aware datetime in it."""
    if isinstance(ts, _dt.datetime):
        if ts.tzinfo is None:
            raise InvalidValueError("timestamp datetime must carry a timezone", value=ts)
        ts = ts.timestamp()
    elif not (isinstance(ts, (int, float)) and not isinstance(ts, bool)):
        raise InvalidValueError(f"timestamp must be Unix seconds (a number) or an aware datetime, got {ts!r:.60}",
                                value=ts)
    t = float(ts)
    if not (math.isfinite(t) and MIN_TIMESTAMP <= t <= MAX_TIMESTAMP):
        hint = "; it looks like milliseconds: divide by 1000" if MAX_TIMESTAMP < t < MAX_TIMESTAMP * 1000 else ""
        raise InvalidValueError(f"timestamp {ts!r} is outside 1970..2200 in Unix seconds{hint}", value=ts)
    return t


def param_value(key: str, v: Any) -> Any:
    """A parameter or tag value as a JSON scalar (str, bool, int, float)."""
    if v is None:
        return "None"
    if isinstance(v, float) and not math.isfinite(v):
        return v
    if isinstance(v, (str, bool, int, float)):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63:
            return str(v)  # beyond xsd:long: kept exactly, as text
        return v
    torch = sys.modules.get("torch")
    try:
        if torch is not None and isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise InvalidValueError(f"parameter {key!r}: a tensor parameter must hold one number, got shape "
                                        f"{tuple(v.shape)}; log a summary (or str(tensor)) instead", value=v)
            return v.item()
        if hasattr(v, "item") and callable(v.item) and type(v).__module__ == "numpy":  # NumPy scalars
            return v.item()
        if isinstance(v, (list, tuple)):
            return str(list(v))[:10_000]
        return str(v)[:10_000]
    except InvalidValueError:
        raise
    except Exception as exc:
        raise InvalidValueError(f"parameter {key!r}: cannot turn the {type(v).__name__} into text "
                                f"({type(exc).__name__}: {str(exc)[:100]})", value=v) from exc
