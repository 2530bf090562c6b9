"""Ctrl-C and SIGTERM in the CLI: exit 128 + the signal with one line, even where CPython would otherwise
die by the signal at exit (a bare KeyboardInterrupt that crossed a C-level `PyRun_*` call) or drop the stop
(raised inside a weakref callback)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import weakref

import pytest

from specprobe.app import cli

# A fake subcommand run by `cli.main` in a fresh interpreter: the signal is raised while Python code runs
# inside `PyRun_String`, the way pybind11/PyO3 extensions run snippets.
_THROUGH_PYRUN = textwrap.dedent(
    """
    import ctypes, sys
    import specprobe.app.cli as cli

    def handler(argv):
        code = b"import os, signal\\nos.kill(os.getpid(), signal.SIG{sig})\\nfor _ in range(10**7): pass\\n"
        run = ctypes.pythonapi.PyRun_String
        run.restype = ctypes.py_object
        run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
        run(code, 257, {{}}, {{}})  # 257 = Py_file_input
        return 0

    cli._run = handler
    sys.exit(cli.main([]))
    """
)


@pytest.mark.parametrize(("sig", "code"), [("INT", 130), ("TERM", 143)])
def test_a_stop_inside_pyrun_exits_with_128_plus_the_signal(sig, code, tmp_path):
    # run as `python -m`, whose exit path honours CPython's "unhandled KeyboardInterrupt" flag
    (tmp_path / "fake_cli.py").write_text(_THROUGH_PYRUN.format(sig=sig), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "fake_cli"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("specprobe: ")


def test_a_stop_swallowed_by_a_weakref_callback_is_delivered_again():
    class Thing:
        pass

    def callback(_ref: object) -> None:
        raise cli.Interrupted(signal.SIGINT)

    old_handler = signal.signal(signal.SIGINT, cli._raise_stop)
    old_hook = sys.unraisablehook
    sys.unraisablehook = cli._redeliver_swallowed_stop(old_hook)
    try:
        with pytest.raises(cli.Interrupted):
            thing = Thing()
            ref = weakref.ref(thing, callback)
            del thing  # the callback raises; Python reports it as unraisable and carries on
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the re-sent signal's handler lands in this ordinary code
                time.sleep(0.001)
        assert ref() is None
    finally:
        sys.unraisablehook = old_hook
        signal.signal(signal.SIGINT, old_handler)


def test_other_unraisable_exceptions_reach_the_previous_hook():
    seen: list[BaseException] = []
    hook = cli._redeliver_swallowed_stop(lambda u: seen.append(u.exc_value))

    class Report:
        exc_value = RuntimeError("in a __del__")

    hook(Report())
    assert [type(e) for e in seen] == [RuntimeError]
