"""OpenLineage events sent live by ``prov4torch run --openlineage URL`` (or ``OPENLINEAGE_URL``): START as the run
starts, its terminal event (COMPLETE/FAIL/ABORT, with inputs, outputs and governance) once the rank files are
merged. POSTed as JSON to ``URL`` + ``/api/v1/lineage`` (Marquez's and the OpenLineage HTTP transport's path;
a URL that already ends in a path is used as it is).

The endpoint never slows or fails training: events go through a bounded queue to one daemon thread; each POST
has a timeout; a response is read at most 64 KiB deep (a 500 with a huge body costs nothing); nothing is
retried. Every event is also written to ``openlineage.jsonl`` in the run directory, delivered or not, and the
run's summary says what was delivered. The standard library's ``http.client`` does the sending:
``openlineage-python``'s HTTP transport reads a whole response body and retries 5xx with backoff, the two things
a hostile or dead endpoint must not be able to make us do.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TIMEOUT_S = 5.0  # one POST
CLOSE_WAIT_S = 10.0  # at the end, for what is still queued
QUEUE_MAX = 16
READ_MAX = 64 << 10
FILE_NAME = "openlineage.jsonl"


def endpoint(url: str) -> urllib.parse.SplitResult:
    """The URL to POST to, or ConfigError saying why ``url`` is not one."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--openlineage {url!r}: give an http(s) URL of an OpenLineage endpoint, e.g. "
                          "http://localhost:5000")
    if parts.path in ("", "/"):
        parts = urllib.parse.SplitResult(parts.scheme, parts.netloc, "/api/v1/lineage", parts.query, parts.fragment)
    return parts


class LiveEmitter:
    """Sends events in the background; ``close`` writes them all to the run directory and reports."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.target = endpoint(url)
        self.url = urllib.parse.urlunsplit(self.target)
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self.delivered = 0
        self.problems: list[str] = []
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_MAX)
        self.thread = threading.Thread(target=self._work, name="prov4torch-openlineage", daemon=True)
        self.thread.start()

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.problems.append("queue full: an event was not sent")

    def _work(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            try:
                self._post(json.dumps(event).encode())
                self.delivered += 1
            except Exception as exc:  # noqa: BLE001 - a dead or hostile endpoint is a note, never an error
                self.problems.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    def _post(self, body: bytes) -> None:
        t = self.target
        cls = http.client.HTTPSConnection if t.scheme == "https" else http.client.HTTPConnection
        conn = cls(t.hostname or "", t.port, timeout=self.timeout_s)
        try:
            path = t.path + (f"?{t.query}" if t.query else "")
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read(READ_MAX)
            if not 200 <= resp.status < 300:
                raise ConfigError(f"HTTP {resp.status} {resp.reason}")
        finally:
            conn.close()

    def close(self, run_dir: Path | None, wait_s: float = CLOSE_WAIT_S) -> str:
        """Stop sending (waiting at most ``wait_s`` for what is queued), write every event to ``run_dir``; one
        line saying what happened."""
        deadline = time.monotonic() + wait_s
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=max(0.0, wait_s))
        self.thread.join(max(0.0, deadline - time.monotonic()))
        where = ""
        if run_dir is not None and run_dir.is_dir():
            from ..safefs import write_atomic

            write_atomic(run_dir / FILE_NAME, "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.events))
            where = f"; all {len(self.events)} in {run_dir / FILE_NAME}"
        if self.delivered == len(self.events):
            return f"openlineage: {self.delivered} event(s) delivered to {self.url}{where}"
        why = self.problems[-1] if self.problems else f"no answer within {wait_s:g} s"
        return f"openlineage: {self.delivered} of {len(self.events)} event(s) delivered to {self.url} ({why}){where}"
