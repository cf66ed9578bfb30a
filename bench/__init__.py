"""hubforge benchmarks: every figure is a ratio to a baseline measured in the same run."""

import sys
from pathlib import Path

# The benchmarks start what the tests start, with the tests' harness (tests/harness).
_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
