"""A papermill engine that runs notebooks as tracked runs: ``papermill --engine hubforge``.

Registered under the ``papermill.engine`` entry-point group as ``hubforge``.
It is papermill's own ``NBClientEngine`` with the kernel started the way the
jupyter-server extension starts it (:mod:`.launch`), plus:

- ``HUBFORGE_ORIGIN=papermill`` and ``JPY_SESSION_NAME`` = the input notebook;
- ``HUBFORGE_PARAMETERS``: the papermill parameters as a JSON object, for the
  kernel side to log as MLflow params;
- ``HUBFORGE_OUTPUT_NOTEBOOK``: where papermill writes the output notebook;
- ``HUBFORGE_RUN_ID_FILE``: a file the kernel side writes its MLflow run id to
  when it opens a run. After execution the engine reads it and logs the output
  notebook (as executed) to that run as an artifact, plus any parameter the
  kernel did not log, because the kernel is gone by the time papermill has
  the finished notebook. When MLflow is away just then, the output notebook is
  kept in the spool for the user's server to send later (:mod:`.replay`).

Non-Python kernels run exactly as with the default engine.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args

from hubforge.contract import (
    CLOSE_BUDGET_ENV,
    ORIGIN_ENV,
    OUTPUT_NOTEBOOK_ENV,
    PARAMETERS_ENV,
    RUN_ID_FILE_ENV,
    param_item,
)

from .kernel.queue import refused
from .launch import (
    KERNEL_SHUTDOWN_WAIT,
    add_extension_argument,
    apply_env,
    close_budget,
    is_python_kernel,
    tracking_env,
)
from .pending import PendingRun, spool_root, write_pending

__all__ = ["HubforgeEngine", "kernel_launch", "log_output_notebook"]

ORIGIN = "papermill"
SCHEDULER = "scheduler"


def kernel_launch(
    server_env: Mapping[str, str],
    *,
    input_path: str | None,
    output_path: str | None,
    parameters: Mapping[str, Any],
    run_id_file: str,
    cwd: str,
) -> tuple[dict[str, str], list[str]]:
    """The kernel's full environment and extra arguments for a papermill run."""
    # The scheduler runs its jobs through this engine and says so; anything else is papermill.
    origin = SCHEDULER if server_env.get(ORIGIN_ENV) == SCHEDULER else ORIGIN
    additions = tracking_env(server_env, root_dir=cwd, origin=origin)
    additions[PARAMETERS_ENV] = json.dumps(dict(parameters), default=str)
    additions[RUN_ID_FILE_ENV] = run_id_file
    additions[CLOSE_BUDGET_ENV] = str(close_budget(KERNEL_SHUTDOWN_WAIT))
    if input_path:
        additions["JPY_SESSION_NAME"] = _local(input_path)
    if output_path and output_path != "-":  # "-" is stdout
        additions[OUTPUT_NOTEBOOK_ENV] = _local(output_path)
    return apply_env(server_env, server_env, additions), add_extension_argument([])


def _local(path: str) -> str:
    # Remote notebooks (s3://, https://) keep their URL; local ones become absolute.
    return path if "://" in path else os.path.abspath(path)


def _is_python(kernel_name: str | None, nb: Any) -> bool:
    try:
        return is_python_kernel(KernelSpecManager().get_kernel_spec(kernel_name or "python3"))
    except NoSuchKernel:
        return str(nb.metadata.get("kernelspec", {}).get("language", "")).lower() == "python"


class _TrackedClient(PapermillNotebookClient):
    """papermill's client, giving the kernel time to end its run and log its fits when done."""

    def create_kernel_manager(self) -> Any:
        km = super().create_kernel_manager()
        km.shutdown_wait_time = max(float(km.shutdown_wait_time), KERNEL_SHUTDOWN_WAIT)
        return km


class HubforgeEngine(NBClientEngine):
    """``NBClientEngine`` whose Python kernels load hubforge's tracking extension."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the notebook like papermill's default engine, the kernel prepared for tracking."""
        meta = nb_man.nb.metadata.get("papermill", {})
        input_path = kwargs.pop("input_path", None) or meta.get("input_path")
        if not _is_python(kernel_name, nb_man.nb):
            return super().execute_managed_notebook(
                nb_man, kernel_name, log_output, stdout_file, stderr_file, start_timeout, execution_timeout, **kwargs
            )
        with tempfile.TemporaryDirectory(prefix="hubforge-papermill-") as spool:
            run_id_file = os.path.join(spool, "run_id")
            env, extra_arguments = kernel_launch(
                os.environ,
                input_path=input_path,
                output_path=meta.get("output_path"),
                parameters=meta.get("parameters") or {},
                run_id_file=run_id_file,
                cwd=os.getcwd(),
            )
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
                extra_arguments=extra_arguments,
            )
            try:
                return _TrackedClient(nb_man, **final_kwargs).execute(env=env)
            finally:
                run_id = Path(run_id_file).read_text().strip() if os.path.exists(run_id_file) else ""
                if run_id:
                    log_output_notebook(run_id, nb_man.nb, meta.get("output_path"), env, meta.get("parameters"))


@contextmanager
def _mlflow_env(env: Mapping[str, str]) -> Iterator[None]:
    # MLflow reads its URI and token from os.environ only: lend it the kernel's, then restore.
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names if name in env})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_output_notebook(
    run_id: str,
    nb: Any,
    output_path: str | None,
    env: Mapping[str, str],
    parameters: Mapping[str, Any] | None = None,
) -> None:
    """Log the executed notebook (and parameters the kernel did not log) to ``run_id``.

    Failures are reported as warnings: the notebook has run, and its output is
    already written by papermill.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Param

    with _mlflow_env(env), tempfile.TemporaryDirectory() as tmp:
        name = os.path.basename(output_path or "") if output_path and "://" not in output_path else ""
        local = Path(tmp) / (name or "output.ipynb")
        try:
            nbformat.write(nb, local)
            client = MlflowClient()
            client.log_artifact(run_id, str(local))
            logged = client.get_run(run_id).data.params
            missing = [Param(k, str(v)) for k, v in (parameters or {}).items() if k not in logged]
            if missing:
                client.log_batch(run_id, params=missing[:100])
        except Exception as exc:  # the run's data is a bonus; never fail a finished notebook over it
            if not local.is_file() or refused(exc):
                logger.warning("hubforge: could not log the output notebook to MLflow run %s: %s", run_id, exc)
                return
            # MLflow is away: keep the output notebook (and the parameters, idempotent) for later.
            try:
                kept = write_pending(
                    spool_root(env),
                    PendingRun(tracking_uri=env.get("MLFLOW_TRACKING_URI", ""), run_id=run_id, status=None),
                    [param_item(run_id, str(k), str(v)) for k, v in (parameters or {}).items()],
                    [(local, "")],
                )
            except Exception as keep_exc:
                logger.warning("hubforge: MLflow unreachable (%s), and keeping the output failed: %s", exc, keep_exc)
                return
            logger.warning("hubforge: MLflow unreachable; the output notebook is kept in %s and sent later", kept)
