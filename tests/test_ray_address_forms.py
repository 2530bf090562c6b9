"""IPv6 forms of `--address` / RAY_ADDRESS in the reachability check: an unbracketed IPv6 address ("::1",
"::1:6379"), which `ray.init` refuses as "Invalid address format", was read as host ":" port 1 (or host "::1"
port 6379) and refused as 'cannot reach the Ray cluster at ::1 (Name or service not known)'; it is now left to
Ray's own message. A bracketed one is named in brackets ("[::1]:1", not "::1:1")."""

from __future__ import annotations

import pytest

from tests.test_ray_reachability import executors_ray  # noqa: F401 - the fixture


@pytest.mark.parametrize("address", ["::1", "::1:6379", "fd00::2:6379", "ray://::1:10001"])
def test_an_unbracketed_ipv6_address_is_left_to_ray(executors_ray, address):  # noqa: F811
    assert executors_ray._target(address) is None
    executors_ray.check_reachable(address, 1.0)  # not refused here: ray.init says what is wrong with it


def test_a_bracketed_ipv6_address_is_named_in_brackets(executors_ray):  # noqa: F811
    assert executors_ray._target("[::1]:6379") == ("::1", 6379, "--address")
    with pytest.raises(ValueError, match=r"^cannot reach the Ray cluster at \[::1\]:1 \("):
        executors_ray.check_reachable("[::1]:1", 5.0)
