"""Reading who listens on a port from the kernel's socket tables (``/proc/net/tcp``)."""

from __future__ import annotations

from pathlib import Path

from hubforge.spawner_profiles.local.listeners import listening_inodes, port_held

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
TCP = HEADER + (
    # 127.0.0.1:25672 listening; 0.0.0.0:2024 listening; 127.0.0.1:25672 connected (not a listener)
    "   0: 0100007F:6448 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 7192 1 0 100 0 0 10 0\n"
    "   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 632 1 0 100 0 0 10 0\n"
    "   2: 0100007F:6448 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000   106        0 9001 1 0 20 4 30 10\n"
)
TCP6 = HEADER + (
    "   0: 00000000000000000000000000000000:6448 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000  1000        0 8080 1 0 100 0 0 10 0\n"
)


def test_listeners_on_a_port_come_from_both_tables_and_only_in_the_listen_state(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(TCP)
    (tmp_path / "tcp6").write_text(TCP6)
    tables = (tmp_path / "tcp", tmp_path / "tcp6")
    assert listening_inodes(0x6448, tables) == {7192, 8080}
    assert listening_inodes(2024, tables) == {632}
    assert listening_inodes(8000, tables) == set()


def test_a_missing_table_is_no_listener(tmp_path: Path) -> None:
    assert listening_inodes(2024, (tmp_path / "absent",)) == set()


def test_a_port_is_held_by_a_listener_or_a_connections_local_end_not_by_time_wait(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(
        TCP
        # 127.0.0.1:40000 the local end of a connection; 127.0.0.1:40001 in TIME_WAIT only
        + "   3: 0100007F:9C40 0100007F:6448 01 00000000:00000000 00:00000000 00000000     0        0 9100 1 0 20\n"
        + "   4: 0100007F:9C41 0100007F:6448 06 00000000:00000000 03:00001000 00000000     0        0 0 3 0\n"
    )
    tables = (tmp_path / "tcp",)
    assert port_held(0x6448, tables)
    assert port_held(40000, tables)
    assert not port_held(40001, tables)
    assert not port_held(8000, tables)
    assert listening_inodes(40000, tables) == set()
