"""twotower: two-tower retrieval and ranking for personalized recommendation and search.

    import twotower
    model = twotower.train("events.csv", items="items.csv", out="runs/shop")
    model.recommend(["u1", "u2"], k=10)
"""

import os as _os

__version__ = "0.1.0"
_os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"      # before anything imports mlflow

from .config import Config, load_config  # noqa: E402
from .errors import InputError  # noqa: E402

__all__ = ["Config", "InputError", "Model", "load", "load_config", "train", "__version__"]


def __getattr__(name: str):
    """`Model`, `load` and `train` import torch: only when asked for, so `twotower --help` stays fast."""
    if name in ("Model", "load", "train"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'twotower' has no attribute {name!r}")
