"""twotower: two-tower retrieval and ranking for personalized recommendation and search."""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import InputError  # noqa: E402

__all__ = ["Config", "InputError", "load_config", "__version__"]
