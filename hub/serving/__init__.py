"""The serving service: approved model versions as HTTP endpoints, with canaries.

A hub-managed tornado service (``python -m hubforge.hub.serving``) at
``/services/serving/``. Each approved version runs in MLflow's scoring server
(uvicorn with MLflow's scoring app, as ``mlflow models serve --env-manager local`` runs
it: one process per version, with a clean environment); the router splits an endpoint's
traffic between its production release and a canary by percent, and the governance
service deploys, promotes and rolls back.
:mod:`.model` and :mod:`.digest` are pure (governance uses :func:`.digest.tree_digest`
too); :mod:`.state` keeps the routes; :mod:`.scoring` runs the processes;
:mod:`.upstream` talks to them; :mod:`.router` holds it together behind
:mod:`.handlers`; :mod:`.front` listens on the service's port, answers most scoring
requests itself and hands the rest to the handlers (:mod:`.http1` reads the requests);
:mod:`.app` assembles and starts it. Importing this package imports
none of them. On Kubernetes, :mod:`.kserve` and :mod:`.kserve_client` drive KServe with
the same transitions.
"""

__all__: list[str] = []
