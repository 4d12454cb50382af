"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

A page is loaded from a file; what the browser saw is kept: console
messages, uncaught exceptions, log entries (a refused script or fetch) and
every request the page made. `evaluate` runs JavaScript in the page and
returns its JSON value; `screenshot` gives a PNG. No library and no network
port: the protocol is JSON messages ended by a NUL byte, on file descriptors
3 (to the browser) and 4 (from it).

    python tests/chromium.py PAGE.html SHOT.png [WIDTH HEIGHT]    # a screenshot of the first screen, for the docs
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TIMEOUT = 60.0  # seconds for one answer; a loaded CI machine is slow to start a browser


class BrowserError(Exception):
    pass


class Browser:
    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 900):
        binary = binary or shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
        self.profile = tempfile.mkdtemp(prefix="fwmatrix-chromium-")
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={self.profile}/profile",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
            "--disable-dev-shm-usage", f"--window-size={width},{height}", "about:blank",
        ]
        # the pipe ends the browser gets, moved above 10 (closed on exec) so that the child can
        # place them at 3 and 4 without overwriting one with the other
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        theirs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)

        def place_pipes() -> None:
            os.dup2(theirs[0], 3)
            os.dup2(theirs[1], 4)

        self.log = Path(self.profile) / "stderr.log"  # a file, not a pipe: the browser never blocks on it
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([binary, *flags], preexec_fn=place_pipes, close_fds=False,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        for fd in theirs:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # -- the protocol ------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium in {TIMEOUT} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                stderr = self.log.read_text(errors="replace")[-2000:]
                raise BrowserError(f"Chromium closed the pipe (exit {self.process.poll()}): {stderr}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + TIMEOUT
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    # -- what a test uses ----------------------------------------------------------------------

    def open(self, path: Path) -> None:
        self.call("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, full_page: bool = True) -> bytes:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page})["data"]
        return base64.b64decode(data)

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and log entries of level error
        (a script or fetch the page's security policy refused, a resource that failed)."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{params['type']}: {[a.get('value', a.get('description')) for a in params.get('args', [])]}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(f"log: {params['entry'].get('text')}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    page, shot = Path(sys.argv[1]), Path(sys.argv[2])
    size = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (1400, 900)
    with Browser(width=size[0], height=size[1]) as browser:
        browser.open(page)
        shot.write_bytes(browser.screenshot(full_page=False))
        print("\n".join(browser.problems()) or "no problems", file=sys.stderr)
