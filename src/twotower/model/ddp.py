"""The pieces of data-parallel tower training: a rank's share of a batch, the batch's in-batch candidates
gathered from every rank (gradients flowing back to the rank that computed each row), and the model with
its loss step as one module that DistributedDataParallel wraps."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def rank_share(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's windows of a global batch: every world-th one from its rank on (the batch is sorted by
    length, so the ranks get windows of about the same length)."""
    return idx[rank::world]


def step_bounds(n: int, batch_size: int, world: int) -> list[int]:
    """Where each global batch of `n` shuffled windows starts (and the end); a last batch with fewer windows
    than ranks joins the one before it, so every rank has a window in every step."""
    bounds = list(range(0, n, batch_size)) + [n]
    if world > 1 and len(bounds) > 2 and bounds[-1] - bounds[-2] < world:
        del bounds[-2]
    return bounds


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient of the gathered rows and hands each rank the
    part for its own rows: the rows' gradient is the one a single process would compute on the whole batch."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:           # [m, d] -> [world, m, d]
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            mine = torch.empty_like(grad[0])
            dist.reduce_scatter_tensor(mine, grad)
            return mine
        dist.all_reduce(grad)                    # gloo has no reduce_scatter: sum everything, keep this rank's
        return grad[dist.get_rank()]


def gather_batch(codes: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every rank's (target codes [n_r], target vectors [n_r, d]) of one step -> (codes [G], vectors [G, d],
    the offset of this rank's rows in them), G = sum of n_r. Ranks may hold different numbers of rows."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(codes)], dtype=torch.int64))
    sizes = [int(s) for s in sizes]
    m = max(sizes)
    padded = [torch.zeros(m, dtype=codes.dtype) for _ in range(world)]
    dist.all_gather(padded, F.pad(codes, (0, m - len(codes))))
    gathered = _GatherWithGrad.apply(F.pad(vectors, (0, 0, 0, m - len(vectors))))
    all_codes = torch.cat([p[:s] for p, s in zip(padded, sizes)])
    all_vectors = torch.cat([g[:s] for g, s in zip(gathered, sizes)])
    return all_codes, all_vectors, sum(sizes[:rank])


def all_sum(values: list[float]) -> list[float]:
    """Each value summed over the ranks."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(value):
    """Rank 0's `value` (any picklable object) on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class LossStep(nn.Module):
    """The towers and one loss step as a single module: DistributedDataParallel syncs the gradients of the
    parameters a module's forward used, so the whole step runs inside `forward`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, step, *args):
        """`step(model, *args)`, e.g. the trainer's batch loss."""
        return step(self.model, *args)


def data_parallel(model: nn.Module) -> nn.Module:
    """The model's loss step under DistributedDataParallel (parameters start from rank 0's). A parameter a
    step leaves unused (e.g. a feature no row of the batch has) must not stall the gradient sync."""
    return nn.parallel.DistributedDataParallel(LossStep(model), find_unused_parameters=True)
