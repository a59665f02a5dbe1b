"""An unreachable Ray cluster is a named error within seconds, before anything is written. Loopback only: an address
is probed here first and never handed to Ray, which would retry it for minutes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from datagen.runner import run_datagen
from runtime.ray_cluster import check_ray_address

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("form", ["{host}:{port}", "ray://{host}:{port}"])
@pytest.mark.parametrize("source", ["env", "config"])
def test_an_unreachable_address_is_named_with_its_source(monkeypatch, form: str, source: str, small_cfg) -> None:
    address = form.format(host="127.0.0.1", port=_closed_port())
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if source == "env":
        monkeypatch.setenv("RAY_ADDRESS", address)
        cfg, named = small_cfg(), r"\$RAY_ADDRESS"
    else:
        cfg, named = small_cfg(f"datagen.ray_address={address}"), "datagen.ray_address"
    t0 = time.monotonic()
    with pytest.raises(
        ConnectionError, match=rf"cannot reach the Ray cluster at {address} \(from {named}\).*ray start"
    ):
        check_ray_address(cfg)
    assert time.monotonic() - t0 < 15


def test_make_datagen_fails_before_writing_anything(tmp_path: Path, monkeypatch, small_cfg) -> None:
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")
    cfg = small_cfg("datagen.hemisphere.samples=10")
    with pytest.raises(ConnectionError, match="RAY_ADDRESS"):
        run_datagen(cfg, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_listening_address_and_a_local_ray_pass(monkeypatch, small_cfg) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_ray_address(small_cfg())  # no address: a local Ray
    check_ray_address(small_cfg("datagen.ray_address=local"))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_ray_address(small_cfg(f"datagen.ray_address=127.0.0.1:{server.getsockname()[1]}"))


def test_a_malformed_address_and_auto_without_a_cluster_are_named(monkeypatch, small_cfg) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConnectionError, match=r"'nohost' .*not host:port"):
        check_ray_address(small_cfg("datagen.ray_address=nohost"))
    import ray._private.utils as ray_utils

    monkeypatch.setattr(ray_utils, "read_ray_address", lambda *a, **k: None)
    with pytest.raises(ConnectionError, match=r"'auto' .*no Ray cluster was started on this machine"):
        check_ray_address(small_cfg("datagen.ray_address=auto"))
