"""What the Prefect flows (``flows/``) need from the library, DVC doing the real work:

- :mod:`.worktree`: each flow run's own git worktree sharing the project's DVC cache;
- :mod:`.dvc`: ``dvc`` commands streamed into the run's logs, failures classified for retries,
  ``-S`` overrides, a target's stages from DVC's graph;
- :mod:`.run_cache`: stage results moved between machines through the DVC remote's run cache;
- :mod:`.targets`: which targets run on which Prefect work pool;
- :mod:`.story`: the run's key metrics as markdown and table rows for Prefect artifacts.
"""
