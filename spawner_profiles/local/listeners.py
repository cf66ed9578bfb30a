"""Who listens on a TCP port: the server a spawn started, another process, or nobody yet.

A local server's port is chosen free (:func:`hubforge.ports.free_port`) and bound a few
seconds later, once the server has imported. In between, any process on the machine may take it. The
hub's readiness check cannot tell: it takes any answer below 500 from the port, even another
program's 404, as the server being up, and would then route the person's URL to that program.
The spawner instead asks the kernel's own tables (Linux ``/proc``) whose socket listens there.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Listener", "listener_of", "port_held"]

#: TCP states in /proc/net/tcp{,6}: LISTEN, and TIME_WAIT (which a server's bind with
#: SO_REUSEADDR, as jupyter-server's, passes).
_LISTEN = "0A"
_TIME_WAIT = "06"
_PROC = Path("/proc")
_TABLES = (_PROC / "net/tcp", _PROC / "net/tcp6")


class Listener(enum.Enum):
    NOBODY = "nobody"
    OURS = "ours"  # a socket of the process (or one of its descendants)
    OTHER = "other"  # a socket of some other process
    UNKNOWN = "unknown"  # cannot be told here: no /proc (not Linux), or the process's sockets are hidden


def _sockets(port: int, tables: Iterable[Path]) -> Iterable[tuple[str, int]]:
    """(state, inode) of each TCP socket whose local port is ``port`` (any address)."""
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                yield fields[3], int(fields[9])


def listening_inodes(port: int, tables: Iterable[Path] = _TABLES) -> set[int]:
    """Socket inodes of the listeners on ``port`` (any address), from /proc/net/tcp and tcp6."""
    return {inode for state, inode in _sockets(port, tables) if state == _LISTEN}


def port_held(port: int, tables: Iterable[Path] = _TABLES) -> bool:
    """Whether some socket holds ``port`` so that a server could not bind it: a listener, or a
    connection whose local end is that port (a port configured, or chosen where the kernel
    leaves no room outside its ephemeral range, may be one). A socket in TIME_WAIT does not count."""
    return any(state != _TIME_WAIT for state, _inode in _sockets(port, tables))


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (parent links read from /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ")"
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of the sockets the processes ``pids`` hold open."""
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = list((_PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def listener_of(port: int, pid: int) -> Listener:
    """Whether process ``pid`` (or a descendant) listens on ``port``, someone else does, or nobody."""
    if not (_PROC / "net/tcp").exists():
        return Listener.UNKNOWN  # not Linux
    listening = listening_inodes(port)
    if not listening:
        return Listener.NOBODY
    if listening & socket_inodes([pid]) or listening & socket_inodes(descendants(pid) - {pid}):
        return Listener.OURS
    if os.path.exists(_PROC / str(pid)) and not os.access(_PROC / str(pid) / "fd", os.R_OK | os.X_OK):
        return Listener.UNKNOWN  # another account's process, and we are not root: its sockets are hidden
    return Listener.OTHER
