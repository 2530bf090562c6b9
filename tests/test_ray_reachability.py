"""`--executor ray --address` naming a cluster that does not answer: `ray.init` retried for minutes (over 200 s
for a closed local port) before failing; the run now refuses in one line naming the address, within the
connect timeout. Skips without Ray, except under CI (see `test_ray_executor.require_ray`)."""

from __future__ import annotations

import time

import pytest

from specprobe.app.cli import main
from tests.test_ray_executor import config, require_ray, write_data, write_toml

CLOSED = "127.0.0.1:1"  # nothing listens on port 1: the connection is refused at once


@pytest.fixture
def executors_ray(monkeypatch):
    """The module, with RAY_ADDRESS and the timeout variable unset."""
    require_ray()
    from specprobe.app import executors_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("SPECPROBE_RAY_CONNECT_TIMEOUT_S", raising=False)
    return executors_ray


def test_an_unreachable_address_is_one_line_naming_it(executors_ray, tiny_llama, tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as if no other test had connected this process
    cfg = config(tiny_llama[0], write_data(tmp_path / "qa.json"), tmp_path / "out")
    toml = write_toml(tmp_path / "exp.toml", cfg)
    started = time.perf_counter()
    code = main(["run", str(toml), "--no-progress", "--executor", "ray", "--address", CLOSED])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"specprobe run: error: cannot reach the Ray cluster at {CLOSED} ("), err
    assert "from --address" in err[0] and "Traceback" not in err[0]
    assert seconds < 60, f"took {seconds:.0f} s"


@pytest.mark.parametrize(
    ("address", "env", "expected"),
    [
        (None, None, None),  # Ray starts or finds its own instance
        ("auto", None, None),
        ("local", None, None),
        ("local", "10.0.0.1:6379", None),  # an explicit address wins over RAY_ADDRESS, as in ray.init
        ("10.0.0.1:6379", "10.0.0.2:6379", ("10.0.0.1", 6379, "--address")),
        (None, "10.0.0.2:6379", ("10.0.0.2", 6379, "RAY_ADDRESS")),
        ("auto", "ray://head:10001", ("head", 10001, "RAY_ADDRESS")),
        (None, "auto", None),
        ("ray://head:10001", None, ("head", 10001, "--address")),
        ("[::1]:6379", None, ("::1", 6379, "--address")),
        ("anyscale://cluster", None, None),  # another client scheme: Ray parses it
        ("head", None, None),  # no port: Ray's own error
    ],
)
def test_the_address_checked_is_the_one_ray_init_connects_to(executors_ray, monkeypatch, address, env, expected):
    if env is not None:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert executors_ray._target(address) == expected


def test_a_closed_port_from_ray_address_and_the_timeout_setting(executors_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", CLOSED)
    with pytest.raises(ValueError, match=r"^cannot reach the Ray cluster at 127\.0\.0\.1:1 \(.*; from RAY_ADDRESS\)"):
        executors_ray.check_reachable(None)
    executors_ray.check_reachable("local")  # Ray starts its own: nothing to reach
    monkeypatch.setenv(executors_ray.CONNECT_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=r"^SPECPROBE_RAY_CONNECT_TIMEOUT_S='soon': expected a number of seconds"):
        executors_ray.check_reachable(CLOSED)
    monkeypatch.setenv(executors_ray.CONNECT_TIMEOUT_ENV, "2.5")
    assert executors_ray._timeout_s() == 2.5
