"""Open a page in headless Chromium and report what a reader would see go wrong.

Speaks the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages
ended by a NUL byte; Chromium reads commands on fd 3 and answers on fd 4),
so the standard library is all it needs besides the browser. :func:`load_page`
returns every image with its natural size, the console's errors, uncaught
exceptions and failed network loads.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where Debian's package puts it; CONVBENCH_CHROMIUM overrides.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
#: As root, in a container with no network: without these, Chromium refuses to start
#: (sandbox), or tries many network services and logs their failures.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    chosen = os.environ.get("CONVBENCH_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).exists() else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageReport:
    """What loading a page showed."""

    images: list[dict[str, Any]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    title: str = ""
    #: What each of the caller's ``evaluate`` expressions gave, by name.
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images
                if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]


class DevTools:
    """A Chromium process and its DevTools pipe."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="convbench-chromium-")
        # The shell hands our stdin and stdout to Chromium as fds 3 and 4.
        self._proc = subprocess.Popen(
            ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', binary,
             *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._ids = itertools.count(1)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self._proc.stderr), daemon=True
                         ).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self._proc.stdout.read1(65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")[-2000:]

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and wait for its answer (events meanwhile go to :attr:`events`)."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._proc.stdin.write(json.dumps(message).encode() + b"\0")
        self._proc.stdin.flush()
        while True:
            reply = self._next()
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for(self, method: str, session: str | None = None) -> dict:
        """Wait for an event (it may already have arrived)."""
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            self._next()
            event = self.events[-1] if self.events else {}
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def _next(self) -> dict:
        try:
            message = self._messages.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer from Chromium in {self.timeout:.0f} s; stderr: "
                               f"{self.stderr_tail()}") from None
        if message is None:
            raise RuntimeError(f"Chromium exited ({self._proc.wait(5)}); stderr: "
                               f"{self.stderr_tail()}")
        if "id" not in message:
            self.events.append(message)
        return message

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)


IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.getAttribute('src'),"
             " complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))")


def load_page(binary: str, page: Path, settle: float = 0.5,
              evaluate: dict[str, str] | None = None) -> PageReport:
    """Open ``page`` (a local file), wait for its load event, and report what went wrong.

    ``evaluate`` maps names to JavaScript expressions whose JSON-able values the report keeps
    in ``values`` (what a reader sees: ``document.querySelectorAll('table').length``).
    """
    browser = DevTools(binary)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", session)
        time.sleep(settle)  # late console messages
        images = browser.send("Runtime.evaluate", {"expression": IMAGES_JS,
                                                   "returnByValue": True}, session=session)
        title = browser.send("Runtime.evaluate", {"expression": "document.title",
                                                  "returnByValue": True}, session=session)
        report = PageReport(json.loads(images["result"]["value"]),
                            title=title["result"]["value"])
        for name, expression in (evaluate or {}).items():
            value = browser.send("Runtime.evaluate", {"expression": expression,
                                                      "returnByValue": True}, session=session)
            report.values[name] = value.get("result", {}).get("value")
        for event in browser.events:
            report.console_errors += _errors_of(event)
        return report
    finally:
        browser.close()


def _errors_of(event: dict[str, Any]) -> list[str]:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return ["console: " + " ".join(str(a.get("value", a.get("description", "")))
                                       for a in params.get("args", []))]
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return [f"exception: {details.get('text')} {details.get('exception', {})}"]
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return [f"log: {entry.get('text')} {entry.get('url', '')}"]
    if method == "Network.loadingFailed":
        return [f"network: {params.get('errorText')} (request {params.get('requestId')})"]
    return []
