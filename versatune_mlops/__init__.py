"""VersaTune multi-domain SFT without catastrophic forgetting, tracked with MLflow."""

__version__ = "0.1.0"
