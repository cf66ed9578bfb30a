"""``python -m hubforge.hub.scheduler``: run the scheduler service (JupyterHub starts it)."""

from .app import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
