"""The integration layer's fixtures: one real component each, most of them the test module's own.

Defined in the harness beside the helpers they start, registered here for this layer:
a plain ``mlflow server`` (``mlflow_server``, one shared by the run's modules; ``own_mlflow``, per test
and not started), ``mlflow server --app-name hubforge`` behind a fake hub (``fake_hub``,
``mlflow_url``, ``browser``, ``gate_workers``), and the governance service on SQLite and PostgreSQL
(``backend_store``, ``running``).
"""

from harness.apps import running_apps  # noqa: F401 (fixtures)
from harness.governance import backend_store, running  # noqa: F401 (fixtures)
from harness.mlflow import mlflow_server, own_mlflow  # noqa: F401 (fixtures)
from harness.mlflow_app import browser, fake_hub, gate_workers, mlflow_url  # noqa: F401 (fixtures)
