"""Writing a file whole or not at all, for the parts that keep what people publish or schedule."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["replace_durably"]


def replace_durably(path: Path, body: bytes) -> None:
    """``body`` at ``path``: written to a temporary file beside it, flushed to disk and renamed
    over it, so a reader or a crash finds the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
