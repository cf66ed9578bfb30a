"""``python -m hubforge.hub.features``: run the features service (JupyterHub starts it)."""

from .app import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
