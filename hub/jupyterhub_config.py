# JupyterHub config for hubforge: everything comes from the platform config.
# `hubforge up` runs `jupyterhub -f <this file>` with HUBFORGE_CONFIG (the
# platform.yaml, optional) and HUBFORGE_RUNTIME (ports and programs it chose).
from hubforge.config import load_config
from hubforge.hub.hubconfig import Runtime, configure

c = get_config()  # type: ignore[name-defined]  # noqa: F821
configure(c, load_config(), Runtime.from_env())
