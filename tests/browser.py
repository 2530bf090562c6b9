"""A minimal headless-Chromium driver over the DevTools protocol (websocket-client), for report tests.

`load_page(path)` opens a local HTML file in a fresh headless Chromium, records every network
request, console message, uncaught exception and JavaScript dialog, waits until the page's charts
report they are done (`window.__specprobe.done`), evaluates a few DOM probes and saves a full-page
screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-allow-origins=*",
]


def find_chromium() -> str | None:
    env = os.environ.get("SPECPROBE_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageRun:
    url: str
    requests: list[dict] = field(default_factory=list)  # every request the page made (Network domain)
    console: list[dict] = field(default_factory=list)  # console API calls: {"type", "text"}
    log_entries: list[dict] = field(default_factory=list)  # browser log entries (CSP violations, failed loads)
    exceptions: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)  # alert()/confirm() opened by the page
    status: dict = field(default_factory=dict)  # window.__specprobe after the charts finished
    probes: dict = field(default_factory=dict)  # results of the caller's JS expressions
    screenshot: Path | None = None
    seconds: float = 0.0

    @property
    def external_requests(self) -> list[str]:
        """Requests to anything but the page file itself and in-page data:/blob: URLs."""
        return [r["url"] for r in self.requests if r["url"] != self.url and not r["url"].startswith(("data:", "blob:"))]

    @property
    def errors(self) -> list[str]:
        out = [f"console.{m['type']}: {m['text']}" for m in self.console if m["type"] in ("error", "assert")]
        out += [f"log {e.get('source')}: {e.get('text')}" for e in self.log_entries if e.get("level") == "error"]
        out += [f"exception: {e}" for e in self.exceptions]
        return out


class _CDP:
    def __init__(self, ws_url: str):
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg_id = self.next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == "Page.javascriptDialogOpening":  # never let alert() block the page
                    self.next_id += 1
                    self.ws.send(
                        json.dumps(
                            {"id": self.next_id, "method": "Page.handleJavaScriptDialog", "params": {"accept": False}}
                        )
                    )
        raise TimeoutError(method)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        """Block until an event `method` arrives (or has arrived); returns its params."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["method"] == method:
                    return ev.get("params", {})
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} event")
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                msg = json.loads(self.ws.recv())
            finally:
                self.ws.settimeout(60)
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluate failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def _devtools_port(user_data: Path, proc: subprocess.Popen, timeout: float) -> int:
    port_file = user_data / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited early with code {proc.returncode}")
        if port_file.exists():
            text = port_file.read_text().split()
            if text:
                return int(text[0])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


def _http_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for localhost
    with opener.open(url, timeout=10) as resp:
        return json.loads(resp.read().decode())


def load_page(
    path: str | os.PathLike,
    *,
    screenshot: str | os.PathLike | None = None,
    probes: dict | None = None,
    width: int = 1280,
    height: int = 900,
    timeout: float = 120,
    chromium: str | None = None,
) -> PageRun:
    """Open `path` in headless Chromium and report what happened (see `PageRun`)."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError("no chromium binary found")
    url = Path(path).resolve().as_uri()
    run = PageRun(url)
    t0 = time.monotonic()
    # Chromium's helper processes may still write to the profile while it is removed: not a test failure
    with tempfile.TemporaryDirectory(prefix="specprobe-chromium-", ignore_cleanup_errors=True) as tmp:
        user_data = Path(tmp)
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={user_data}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cdp = None
        try:
            port = _devtools_port(user_data, proc, timeout=60)
            targets = _http_json(f"http://127.0.0.1:{port}/json/list")
            page = next(t for t in targets if t.get("type") == "page")
            cdp = _CDP(page["webSocketDebuggerUrl"])
            for domain in ("Page", "Runtime", "Network", "Log"):
                cdp.send(f"{domain}.enable")
            cdp.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
            nav = cdp.send("Page.navigate", {"url": url})
            if nav.get("errorText"):
                raise RuntimeError(f"navigation failed: {nav['errorText']}")
            cdp.wait_event("Page.loadEventFired", timeout=timeout)
            deadline = time.monotonic() + timeout
            done = False
            while time.monotonic() < deadline:
                try:
                    state = cdp.evaluate(
                        "document.readyState === 'complete' && !!(window.__specprobe && window.__specprobe.done)"
                    )
                except RuntimeError:  # e.g. the execution context was replaced by the navigation
                    state = False
                if state:
                    done = True
                    break
                time.sleep(0.25)
            run.status = cdp.evaluate("JSON.parse(JSON.stringify(window.__specprobe || {}))") or {}
            run.status["finished"] = done
            for name, expr in (probes or {}).items():
                run.probes[name] = cdp.evaluate(expr)
            if screenshot is not None:
                metrics = cdp.send("Page.getLayoutMetrics")
                size = metrics.get("cssContentSize") or metrics["contentSize"]
                full_h = int(min(size["height"], 16000))
                cdp.send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": full_h, "deviceScaleFactor": 1, "mobile": False},
                )
                time.sleep(0.3)
                shot = cdp.send(
                    "Page.captureScreenshot",
                    {
                        "format": "png",
                        "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": width, "height": full_h, "scale": 1},
                    },
                )
                out = Path(screenshot)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(shot["data"]))
                run.screenshot = out
            cdp.send("Runtime.evaluate", {"expression": "1"})  # flush pending events
        finally:
            if cdp is not None:
                events = cdp.events
                cdp.close()
            else:
                events = []
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for ev in events:
        method, params = ev["method"], ev.get("params", {})
        if method == "Network.requestWillBeSent":
            run.requests.append({"url": params["request"]["url"], "type": params.get("type")})
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            run.console.append({"type": params.get("type"), "text": text})
        elif method == "Runtime.exceptionThrown":
            det = params.get("exceptionDetails", {})
            run.exceptions.append(str(det.get("exception", {}).get("description") or det.get("text")))
        elif method == "Log.entryAdded":
            run.log_entries.append(params.get("entry", {}))
        elif method == "Page.javascriptDialogOpening":
            run.dialogs.append(params.get("message", ""))
    run.seconds = time.monotonic() - t0
    return run
