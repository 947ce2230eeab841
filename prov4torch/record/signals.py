"""Process hooks that make a run's status tell the truth without a ``with`` block.

* ``sys.excepthook``: an uncaught exception ends the run FAILED (BLOCKED for a
  PolicyViolation, KILLED for Ctrl-C) before Python prints the traceback;
* SIGTERM / SIGINT: the run ends KILLED; then the handler the user installed is called,
  or the signal's default action happens (the process exits as the signal would);
* ``atexit``: a run still open at interpreter exit ends FINISHED (KILLED after a signal);
* ``fork``: a child process (DataLoader workers) never writes the parent's files.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, Protocol

from ..errors import PolicyViolation, SignalExit
from ..patching import Patches

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Finisher(Protocol):
    """What the hooks need of a run: whether it ended, and ways to end it."""

    @property
    def ended(self) -> bool: ...

    @property
    def closing(self) -> bool: ...

    @property
    def starting(self) -> bool: ...

    def note_signal(self, signum: int) -> None: ...

    def close(self, status: str, *, signal_number: int | None = None) -> None: ...

    def close_from_exception(self, exc: BaseException) -> None: ...


def ending(exc: BaseException, pending_signal: int | None) -> tuple[str, dict[str, Any]]:
    """The status (and exit code, signal, exception to record) an exception escaping the script means."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or code == 0:
            return "FINISHED", {"exit_code": 0}
        return "FAILED", {"exit_code": code if isinstance(code, int) else 1,
                          "exception": exc if not isinstance(code, int) else None}
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"signal_number": pending_signal or signal.SIGINT}
    if isinstance(exc, PolicyViolation):
        return "BLOCKED", {"exception": exc}
    return "FAILED", {"exception": exc}


def from_signal_handler(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by a signal handler of the script's or a library's (PyTorch's SIGCHLD handler
    raises when a DataLoader worker dies), which Python runs wherever the main thread happens to be -- inside
    prov4torch's own recording code, too. Such an exception belongs to the script: it is re-raised, never
    swallowed as a recording failure."""
    handlers = set()
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        code = getattr(handler, "__code__", None)
        if code is not None:
            handlers.add(code)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in handlers:
            return True
        tb = tb.tb_next
    return False


class Hooks:
    """Installed once per run; every hook is a no-op in another process or after the run ends.

    While installed, ``signal.signal`` for SIGTERM/SIGINT is wrapped: a handler the script installs
    after ``start_run`` is chained behind prov4torch's (called after the run is marked KILLED) instead
    of replacing it, and ``signal.getsignal`` returns the script's handler, as if nothing stood between.
    ``defer_exit``: with no handler of the script's, raise ``SignalExit`` instead of dying at once.
    """

    def __init__(self, run: Finisher, defer_exit: bool = False) -> None:
        self.run = run
        self.defer_exit = defer_exit
        self.pid = os.getpid()
        self.previous: dict[int, Any] = {}
        self._prev_excepthook = sys.excepthook
        self._signal: Any = None
        self._getsignal: Any = None
        self._patches = Patches()
        self.deferred: tuple[int, Any] | None = None  # a signal that arrived while the run was being closed

    def install(self) -> None:
        sys.excepthook = self._excepthook
        atexit.register(self._atexit)
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                prev = signal.getsignal(sig)
                if prev == signal.SIG_IGN:
                    continue  # the user chose to ignore it: so do we
                self.previous[sig] = prev
                signal.signal(sig, self._on_signal)
            self._signal, self._getsignal = signal.signal, signal.getsignal
            self._patches.replace(signal, "signal", lambda _original: self._wrapped_signal)
            self._patches.replace(signal, "getsignal", lambda _original: self._wrapped_getsignal)

    def _wrapped_signal(self, signum: Any, handler: Any) -> Any:
        if signum in self.previous and self._mine() and threading.current_thread() is threading.main_thread():
            old, self.previous[signum] = self.previous[signum], handler  # chained behind ours
            return old
        return self._signal(signum, handler)

    def _wrapped_getsignal(self, signum: Any) -> Any:
        if signum in self.previous and self._mine():
            return self.previous[signum]
        return self._getsignal(signum)

    def uninstall(self) -> None:
        if os.getpid() != self.pid:
            return
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_excepthook
        atexit.unregister(self._atexit)
        self._patches.restore()  # signal.signal/getsignal, unless replaced again since
        if threading.current_thread() is threading.main_thread():
            for sig, prev in self.previous.items():
                if signal.getsignal(sig) == self._on_signal:
                    signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous.clear()
    # -- the hooks ---------------------------------------------------------------------
    def _mine(self) -> bool:
        return os.getpid() == self.pid and not self.run.ended

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        prev = self.previous.get(signum, signal.SIG_DFL)
        if prev == signal.SIG_IGN:
            return  # the script chose to ignore it after the run started
        if os.getpid() == self.pid and (self.run.closing or self.run.starting):
            # the run is being closed on this thread right now (end_run, atexit, an exception), or started:
            # interrupting it would lose the record; it finishes, then ``after_close`` does what the signal asks
            # (``release``, once started: the signal is handled as if it arrived then)
            self.deferred = (signum, prev)
            return
        if self._mine():
            self.run.note_signal(signum)
            if not callable(prev) and not self.defer_exit:
                self.run.close("KILLED", signal_number=signum)
        self._act(signum, frame, prev)

    def release(self) -> None:
        """Called by the run once started: a signal deferred meanwhile is handled now."""
        deferred, self.deferred = self.deferred, None
        if deferred is not None:
            self._on_signal(deferred[0], None)

    def after_close(self) -> None:
        """Called by the run once it is closed: a signal deferred meanwhile now takes effect."""
        deferred, self.deferred = self.deferred, None
        if deferred is not None:
            self._act(deferred[0], None, deferred[1])

    def _act(self, signum: int, frame: FrameType | None, prev: Any) -> None:
        if callable(prev):
            prev(signum, frame)  # the user's handler, or Python's KeyboardInterrupt
            return
        if self.defer_exit:
            raise SignalExit(signum)
        # default action: exit as the signal would
        self.uninstall()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _excepthook(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if self._mine():
            self.run.close_from_exception(exc)
        self._prev_excepthook(exc_type, exc, tb)

    def _atexit(self) -> None:
        if self._mine():
            self.run.close("FINISHED")
