"""hubforge's test harness: what more than one test module (or bench/) uses.

``tests/`` is on ``sys.path`` (setup.cfg's ``pythonpath``; bench/__init__.py adds it for
the benchmarks), so this package imports as ``harness``:

- ``harness.platform``: the real platform as a process (``PlatformProcess``), a person in
  a browser (``HubSession``), ``wait_for``, ``free_port``, ``pg_databases``, accounts.
- ``harness.hub``: the one fake hub (``FakeHub``): JupyterHub's REST endpoints a
  service calls, faked at the transport.
- ``harness.mlflow``: a plain ``mlflow server`` (``MlflowServer``) and its fixtures.
- ``harness.mlflow_app``: ``mlflow server --app-name hubforge`` behind a fake hub (``FakeHub``).
- ``harness.mlflow_cli``: both run MLflow's CLI and its worker forked from a process that imported
  what they share once.
- ``harness.governance``: the governance service behind a fake hub (``Running``).
- ``harness.kernel``: tracked ipykernel kernels (``Kernel``) and notebooks for them.
- ``harness.server``: a ``jupyter-server`` with the extension (``Server``), a kernel's
  websocket (``KernelChannel``, ``notebook_session``).
- ``harness.corpus``: the notebook corpus and alice's JupyterLab (``Lab``).
- ``harness.spawner``, ``harness.tracking``, ``harness.config``, ``harness.kept_fits``:
  what a module's unit and integration halves share.
- ``harness.plugin``: the pytest plugin (setup.cfg's ``-p harness.plugin``): each test's
  layer marker from its folder, and the fixtures every layer may use.

Importing a module here starts nothing; the fixtures start what they name. The layers'
fixtures are registered by their conftest.py (tests/integration, tests/platform).
"""
