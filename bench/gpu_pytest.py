"""A pytest plugin for `bench/gpu_check.sh` (`-p bench.gpu_pytest`): one JSON line per finished test.

The lines go to the file named by $SPECPROBE_GPU_CHECK_TESTS, written as each test ends, so a run
stopped by its timeout still leaves the outcomes of the tests that finished. At the end of the session
it also writes which third-party top-level modules the tests imported (the kit's summary lists those
that the GPU image may lack). Without the variable the plugin does nothing.
"""

from __future__ import annotations

import json
import os
import sys

_PHASES: dict[str, dict] = {}


def _write(record: dict) -> None:
    path = os.environ.get("SPECPROBE_GPU_CHECK_TESTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")


def _message(report) -> str | None:
    if report.passed:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):  # (file, line, "Skipped: reason")
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = getattr(report, "longreprtext", "") or str(report.longrepr)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return "\n".join((errors or lines)[-6:])[-1500:]


def pytest_runtest_logreport(report) -> None:
    state = _PHASES.setdefault(
        report.nodeid, {"test": report.nodeid, "outcome": "passed", "seconds": 0.0, "message": None}
    )
    state["seconds"] += report.duration
    if report.failed:
        state["outcome"] = "failed" if report.when == "call" else "error"
        state["message"] = f"{report.when}: {_message(report)}"
    elif report.skipped and state["outcome"] == "passed":
        state["outcome"] = "skipped"
        state["message"] = _message(report)


def pytest_runtest_logfinish(nodeid, location) -> None:
    if nodeid in _PHASES:  # after its teardown: the test's one line
        _write(_PHASES.pop(nodeid))


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("SPECPROBE_GPU_CHECK_TESTS")
    if not path:
        return
    tops = sorted({name.split(".")[0] for name in list(sys.modules)} - set(sys.stdlib_module_names))
    _write({"imported_modules": [t for t in tops if not t.startswith("_")], "exitstatus": int(exitstatus)})
