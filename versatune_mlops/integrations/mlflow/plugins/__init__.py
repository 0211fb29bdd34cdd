"""MLflow plugins, found by MLflow through the entry points in pyproject.toml.

- ``evaluator``: ``mlflow.model_evaluator`` ``versatune`` (per-domain held-out loss and accuracy)
- ``context``: ``mlflow.run_context_provider`` (package version and VersaTune run tags)
- ``ray_backend``: ``mlflow.project_backend`` ``ray`` (``mlflow run --backend ray``)

MLflow imports ``context`` whenever it starts a run, so this package imports nothing heavy.
"""
