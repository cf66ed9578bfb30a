"""The governance service: approvals, policies and the audit store, behind hub auth.

A hub-managed tornado service (``python -m hubforge.hub.governance``) at
``/services/governance/``. :mod:`.policy` and :mod:`.model` are pure;
:mod:`.store` holds the data; :mod:`.handlers` is the REST API;
:mod:`.app` assembles and starts it. Importing this package imports none of
them, so the pure parts stay cheap to import.
"""

__all__: list[str] = []
