"""The launcher's small parts on real processes: the instance marker finds the platform's own.

The parts that need no process are in tests/unit/test_launcher_units.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hubforge.hub.launcher import instance_processes


def test_instance_processes_finds_marked_processes_only(tmp_path: Path) -> None:
    marker = str(tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(sleeper, env={**os.environ, "HUBFORGE_INSTANCE": marker})
    other = subprocess.Popen(sleeper, env={**os.environ, "HUBFORGE_INSTANCE": marker + "-other"})
    try:
        assert [p.pid for p in instance_processes(marker)] == [ours.pid]
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()
