"""``papermill --engine hubforge``: a real papermill process, a real kernel.

The engine is registered for the subprocess through a throw-away
``*.dist-info/entry_points.txt`` on its ``PYTHONPATH`` (what installing the
package with the ``papermill.engine`` entry point produces), so the test does
not depend on the package having been reinstalled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from hubforge.events.spool import read_spool
from hubforge.server_extension.launch import KERNEL_EXTENSION

PAPERMILL = str(Path(sys.executable).with_name("papermill"))

REPORT = """\
import json, os, sys
names = ["HUBFORGE_ORIGIN", "JPY_SESSION_NAME", "HUBFORGE_PARAMETERS", "HUBFORGE_OUTPUT_NOTEBOOK",
         "HUBFORGE_TRACKING", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"]
seen = {name: os.environ.get(name) for name in names}
seen["argv"] = sys.argv
seen["alpha"] = alpha
print("HUBFORGE-SEEN " + json.dumps(seen))
"""

# Stands in for the kernel side's part of the contract (it may not write the file
# yet): use the run it opened, else open one, and say which.
OPEN_RUN = """\
import mlflow
run = mlflow.active_run() or mlflow.start_run()
open(os.environ["HUBFORGE_RUN_ID_FILE"], "w").write(run.info.run_id)
print("HUBFORGE-RUN " + run.info.run_id)
"""


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("alpha = 0.1\nbeta = 'x'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _papermill(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    dist = tmp / "site" / "hubforge_engine_test-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "entry_points.txt").write_text(
        "[papermill.engine]\nhubforge = hubforge.server_extension.papermill_entry:HubforgeEngine\n"
    )
    scrubbed = {k: v for k, v in os.environ.items() if not k.startswith(("HUBFORGE_", "JUPYTERHUB_", "MLFLOW_"))}
    full_env = {**scrubbed, **env, "PYTHONPATH": str(tmp / "site")}
    return subprocess.run(
        [PAPERMILL, "--engine", "hubforge", *args], cwd=tmp, env=full_env, capture_output=True, text=True, timeout=300
    )


def _printed(nb_path: Path, marker: str) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith(marker + " "):
                    return line.removeprefix(marker + " ")
    raise AssertionError(f"the notebook printed no {marker} line")


def test_papermill_run_is_prepared_and_its_output_logged(tmp_path: Path) -> None:
    # One papermill run (a kernel start is seconds on a loaded machine) checks both
    # what the kernel saw and what the engine logged afterwards.
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _notebook(tmp_path / "in.ipynb", REPORT, OPEN_RUN)
    env = {"MLFLOW_TRACKING_URI": uri, "HUBFORGE_AUDIT_DIR": str(tmp_path / "audit"), "JUPYTERHUB_USER": "alice"}
    done = _papermill(tmp_path, env, "in.ipynb", "out.ipynb", "-p", "alpha", "0.5")
    assert done.returncode == 0, done.stderr
    seen = json.loads(_printed(tmp_path / "out.ipynb", "HUBFORGE-SEEN"))
    assert seen["HUBFORGE_ORIGIN"] == "papermill"
    assert seen["JPY_SESSION_NAME"] == str(tmp_path / "in.ipynb")
    assert seen["HUBFORGE_OUTPUT_NOTEBOOK"] == str(tmp_path / "out.ipynb")
    assert json.loads(seen["HUBFORGE_PARAMETERS"]) == {"alpha": 0.5}
    assert seen["alpha"] == 0.5
    assert seen["HUBFORGE_TRACKING"] == "on"
    assert seen["MLFLOW_TRACKING_URI"] == uri  # outside a hub: the user's own
    assert seen["MLFLOW_TRACKING_TOKEN"] is None
    assert f"--IPKernelApp.extensions={KERNEL_EXTENSION}" in seen["argv"]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(_printed(tmp_path / "out.ipynb", "HUBFORGE-RUN"))
    assert "out.ipynb" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # Whoever logs it (the kernel side from HUBFORGE_PARAMETERS, else the engine):
    # the papermill parameter is a param; notebook defaults (beta) are not parameters.
    assert run.data.params["alpha"] == "0.5"
    assert "beta" not in run.data.params
    # Every cell it ran is in the audit spool of its kernel, as seen under papermill.
    (spool,) = (tmp_path / "audit").glob("kernel-*")
    cells = list(read_spool(spool))
    assert len(cells) == 4, "the parameters, the injected parameters, and the two cells"
    assert {(c["user"], c["action"], c["outcome"], c["origin"]["observer"]) for c in cells} == {
        ("alice", "execute", "success", "papermill")
    }
    assert all(c["notebook"].endswith("in.ipynb") and len(c["source_sha256"]) == 64 for c in cells)
