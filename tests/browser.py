"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): load a page, wait
for its load event or for a condition in the page (never a fixed sleep), collect the console's messages and the
page's uncaught exceptions, evaluate JavaScript, save a full-page screenshot.

No Python dependency beyond the standard library; the browser is Debian's ``chromium`` (``apt-get install -y
chromium``), else ``chromium-browser`` / ``google-chrome`` on PATH, else $CHROMIUM. ``find_chromium()`` is None when
there is none: the tests that need it skip, naming it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else shutil.which(explicit)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class BrowserError(RuntimeError):
    pass


@dataclass
class ConsoleEntry:
    level: str  # error, warning, info, log, debug, exception
    text: str
    source: str = ""  # console, exception, network, ...

    def line(self) -> str:
        return f"[{self.level}] ({self.source}) {self.text}"


@dataclass
class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    width: int = 1280
    height: int = 900
    executable: str | None = None
    timeout_s: float = 60.0
    console: list[ConsoleEntry] = field(default_factory=list)

    def __enter__(self) -> "Browser":
        exe = self.executable or find_chromium()
        if exe is None:
            raise BrowserError("no chromium on PATH (apt-get install -y chromium, or set $CHROMIUM)")
        self._profile = tempfile.mkdtemp(prefix="bma-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # the protocol's pipe is fd 3 (commands in) and fd 4 (replies out) of the browser
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--disable-extensions", "--disable-background-networking", f"--user-data-dir={self._profile}",
                f"--window-size={self.width},{self.height}", "about:blank"]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, close_fds=False, preexec_fn=wire_pipes)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self._session = None
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next((t for t in targets if t["type"] == "page"), None)
            target = page["targetId"] if page else self.call("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._proc.poll() is None:
                try:
                    self._send({"id": 10**9, "method": "Browser.close"}, session=False)
                    self._proc.wait(10)
                except (OSError, subprocess.TimeoutExpired, BrowserError):
                    self._proc.kill()
                    self._proc.wait(10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self._proc.stderr:
                self._proc.stderr.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol ---------------------------------------------------------------------------------------------------
    def _send(self, message: dict, session: bool = True) -> None:
        if session and self._session:
            message["sessionId"] = self._session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser closed its pipe (exit code {self._proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _handle_event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(ConsoleEntry(params.get("type", "log"), text, "console"))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append(ConsoleEntry("exception", text, "exception"))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(ConsoleEntry(entry.get("level", "info"), entry.get("text", "") +
                                             (f" ({entry['url']})" if entry.get("url") else ""),
                                             entry.get("source", "log")))
        self._events.append(message)

    def call(self, method: str, timeout_s: float | None = None, **params) -> dict:
        self._next_id += 1
        ident = self._next_id
        self._send({"id": ident, "method": method, "params": params}, session=not method.startswith(
            ("Target.", "Browser.")))
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            message = self._read_message(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            if "method" in message:
                self._handle_event(message)

    def wait_event(self, method: str, timeout_s: float | None = None) -> dict:
        """The next event ``method`` (one already received counts), or BrowserError after the timeout."""
        for i, message in enumerate(self._events):
            if message.get("method") == method:
                return self._events.pop(i)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            message = self._read_message(deadline)
            if "method" in message:
                self._handle_event(message)
                if message["method"] == method:
                    self._events.remove(message)
                    return message

    # -- page ---------------------------------------------------------------------------------------------------------
    def open(self, url: str, timeout_s: float | None = None) -> None:
        """Navigate and wait for the load event."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        if not result.get("loaderId"):  # a same-document navigation (a new #fragment): no load event follows
            return
        self.wait_event("Page.loadEventFired", timeout_s)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluate {expression[:80]!r}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, what: str = "") -> object:
        """Evaluate ``expression`` in the page until it is truthy (the page's own timers and requests keep running
        while we wait on the browser's next message); BrowserError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        poll = ("new Promise(r => { const t0 = Date.now(); const f = () => { const v = (" + expression + "); "
                "if (v || Date.now() - t0 > 500) r(v); else requestAnimationFrame(f); }; f(); })")
        while True:
            value = self.evaluate(poll)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout_s:g} s waiting for {what or expression}")

    def screenshot(self, path: str, full_page: bool = True) -> str:
        params = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": max(size["width"], self.width),
                                                            "height": min(size["height"], 16000), "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    def errors(self) -> list[ConsoleEntry]:
        return [e for e in self.console if e.level in ("error", "exception", "assert")]

    def write_console(self, path: str) -> str:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("".join(e.line() + "\n" for e in self.console) or "(no console messages)\n")
        return path
