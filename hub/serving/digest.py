"""The digest of a model folder: what governance approves and what the router serves.

:func:`tree_digest` hashes a folder's regular files, in the order of their relative
paths, with each path and each file's length framed so that no two different trees
hash alike (``a`` holding ``bc`` is not ``ab`` holding ``c``). Empty folders do not
count; a symbolic link or any other non-regular file anywhere in the tree is refused,
since what it points at could change after the digest was taken.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

from hubforge.errors import Invalid

__all__ = ["DIGEST_PATTERN", "copy_tree", "tree_digest"]

#: What a digest looks like: ``sha256:`` and 64 lowercase hex digits.
DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")

_CHUNK = 1 << 20


def tree_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over ``path``'s regular files: each relative path, then its bytes.

    Raises :class:`~hubforge.errors.Invalid` (naming the entry) for a folder that does
    not exist, holds a symbolic link or a non-regular file, or cannot be read.
    """
    return _walk(Path(path), None)


def copy_tree(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> str:
    """Copy ``source``'s regular files into the new folder ``destination``; their digest.

    The digest is of the bytes written, read once: what :func:`tree_digest` of the copy
    answers, whatever happens to ``source`` meanwhile. Refuses what :func:`tree_digest`
    refuses (the copy is then partial: the caller removes it).
    """
    target = Path(destination)
    target.mkdir(mode=0o700)
    return _walk(Path(source), target)


def _walk(root: Path, target: Path | None) -> str:
    try:
        info = os.lstat(root)
    except OSError as exc:
        raise Invalid(f"{root}: cannot read the model folder: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise Invalid(f"{root}: not a folder (symbolic links are refused)")
    digest = hashlib.sha256()
    for relative in _files(root):
        name = relative.encode("utf-8", "surrogateescape")
        digest.update(len(name).to_bytes(8, "big") + name)
        if target is None:
            _hash_file(root / relative, digest, None)
            continue
        (target / relative).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(target / relative, "xb") as sink:
            _hash_file(root / relative, digest, sink)
    return f"sha256:{digest.hexdigest()}"


def _files(root: Path) -> list[str]:
    """The relative POSIX paths of ``root``'s regular files, sorted; links refused."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root, onerror=_walk_error):
        for name in [*dirs, *files]:
            entry = Path(folder, name)
            mode = os.lstat(entry).st_mode
            if stat.S_ISLNK(mode):
                raise Invalid(f"{entry}: symbolic links are refused in a model folder")
            if name in files:
                if not stat.S_ISREG(mode):
                    raise Invalid(f"{entry}: not a regular file")
                found.append(entry.relative_to(root).as_posix())
    return sorted(found)


def _walk_error(exc: OSError) -> None:
    raise Invalid(f"{exc.filename}: cannot read the model folder: {exc.strerror}") from exc


def _hash_file(path: Path, digest: hashlib._Hash, sink: BinaryIO | None) -> None:
    """Add ``path``'s length and bytes to ``digest`` (and write them to ``sink``), refusing
    the file if its length changes meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Invalid(f"{path}: cannot read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(size.to_bytes(8, "big"))
        read = 0
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            read += len(chunk)
            if sink is not None:
                sink.write(chunk)
    if read != size:
        raise Invalid(f"{path}: changed while its digest was taken")
