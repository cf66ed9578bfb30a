"""User-server side of hubforge: a jupyter-server extension.

Runs inside each user's single-user server. It meets the hub-side code only
through REST APIs, JSON schemas and the platform config. Auto-tracking of
notebook runs to MLflow lands here (see the roadmap in the README).
"""

__all__: list[str] = []
