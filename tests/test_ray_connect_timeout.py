"""A connect timeout the socket cannot take (SPECPROBE_RAY_CONNECT_TIMEOUT_S=inf, or 1e12 s) escaped the
reachability check as an uncaught OverflowError ('timestamp out of range for platform time_t'), a traceback
instead of one line naming the setting."""

from __future__ import annotations

import pytest

from tests.test_ray_reachability import CLOSED, executors_ray  # noqa: F401 - the fixture


@pytest.mark.parametrize("value", ["inf", "1e12"])
def test_a_timeout_too_long_for_a_socket_is_one_line_naming_the_setting(executors_ray, monkeypatch, value):  # noqa: F811
    monkeypatch.setenv(executors_ray.CONNECT_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=r"^SPECPROBE_RAY_CONNECT_TIMEOUT_S: a wait of .* s is more than"):
        executors_ray.check_reachable(CLOSED)
