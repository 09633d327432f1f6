"""A whole catalog's item vectors in fixed-size chunks: memory holds one chunk's activations, not the
catalog's, the result can go straight into a memory-mapped file, and a long encoding shows progress."""

from __future__ import annotations

import numpy as np
import torch

from ..progress import progress_bar
from .twotower import TwoTowerModel

CHUNK = 65_536        # items per forward pass: ~17 MB of [chunk, 64] activations per layer


def encode_items(model: TwoTowerModel, codes: np.ndarray, features: dict[str, np.ndarray] | None = None,
                 out: np.ndarray | None = None, chunk: int = CHUNK, show_progress: bool = False) -> np.ndarray:
    """[n, d] float32 `model.index_vectors` of item `codes` [n] (with `features` {name: [n, ...]} rows, see
    there), computed `chunk` items at a time into `out` (e.g. `np.lib.format.open_memmap`) when given."""
    n = len(codes)
    if out is None:
        out = np.empty((n, model.cfg.dim), np.float32)
    model.eval()
    with progress_bar(show_progress and n > chunk) as bar, torch.inference_mode():
        task = bar.add_task("encoding items", total=n, rate="")
        for lo in range(0, n, chunk):
            part = torch.as_tensor(np.asarray(codes[lo:lo + chunk]))
            values = None if features is None else \
                {k: torch.from_numpy(np.array(v[lo:lo + chunk])) for k, v in features.items()}   # writable copies
            out[lo:lo + chunk] = model.index_vectors(part, values).numpy()
            bar.update(task, advance=len(part))
    return out
