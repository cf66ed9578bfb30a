"""MLflow behind the hub: who may do what, decided where MLflow acts.

MLflow runs as a hub-managed service (``mlflow server --app-name hubforge``); this
package is what that app adds to MLflow:

- :mod:`.policy`: who may read and write which experiment, run and model (owners,
  sharing with hub groups, personas), as one :class:`~.policy.Check` per request;
- :mod:`.rules`: which REST route needs which permission;
- :mod:`.gate`: the ASGI gate every request passes: the hub user behind a token or
  session cookie, CSRF, claims on what is created, the route rules;
- :mod:`.search`: searches and GraphQL fields filtered to what the person may read;
- :mod:`.store`: the same checks inside MLflow's tracking and registry stores, on
  the arguments MLflow parsed (whatever spelling reached the handler);
- :mod:`.ui`: the UI's defaults and quiet answers for features that are off;
- :mod:`.audit`: runs created and finished, models registered, versions and aliases, in
  the audit trail, as the gate saw them;
- :mod:`.app`: the ``mlflow.app`` entry point that puts it together;
- :mod:`.internals`: every use of MLflow's private APIs, in one place.

Nothing is imported here: MLflow loads only in the service that runs it.
"""
