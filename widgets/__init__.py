"""Kernel-side hubforge: ipywidgets panels (feature browsing, model cards, deploy).

Runs in users' kernels and talks to the platform only through its REST APIs.
The panels land here (see the roadmap in the README).
"""

__all__: list[str] = []
