"""The one-machine spawner: each person's server a local process, on their own account.

- :mod:`.spawner`: ``LocalTierSpawner`` (entry point ``hubforge-local``);
- :mod:`.accounts`: one system account per person (``spawner.local.isolation``);
- :mod:`.environments`: the Python environment each image key runs in;
- :mod:`.spawn_page`: the spawn page's tier form;
- :mod:`.gpus`: the machine's GPUs, their allocation and fair-share queue.

Nothing is imported here, so that the launcher can read accounts without loading
JupyterHub's spawner.
"""
