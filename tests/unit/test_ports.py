"""Free ports come from outside the kernel's ephemeral range, where no outgoing connection
can take one between the pick and the server's bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hubforge import ports


def test_the_range_is_read_from_the_kernel_and_defaults_to_linuxs(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t50000\n")
    assert ports.ephemeral_range(setting) == (40000, 50000)
    setting.write_text("garbage")
    assert ports.ephemeral_range(setting) == (32768, 60999)
    assert ports.ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_a_free_port_is_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = ports.ephemeral_range()
    for _ in range(200):
        port = ports.free_port()
        assert ports.FLOOR <= port <= 65535 and not low <= port <= high, port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nobody holds it


def test_a_held_port_is_never_handed_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Leave room for two ports only above the floor: one held by a listener.
    setting = tmp_path / "ip_local_port_range"
    setting.write_text(f"{ports.FLOOR + 2} 65535")
    monkeypatch.setattr(ports, "_RANGE_FILE", setting)
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", ports.FLOOR))
    except OSError:
        pytest.skip(f"port {ports.FLOOR} is in use on this machine")
    holder.listen()
    if not ports._bindable("127.0.0.1", ports.FLOOR + 1):
        holder.close()
        pytest.skip(f"port {ports.FLOOR + 1} is in use on this machine")
    with holder:
        chosen = {ports.free_port() for _ in range(50)}
    assert chosen == {ports.FLOOR + 1}


def test_with_no_room_outside_the_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text(f"{ports.FLOOR} 65535")
    monkeypatch.setattr(ports, "_RANGE_FILE", setting)
    port = ports.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert port >= 1024
