"""Train the towers: mini-batches of history windows, the retrieval loss, early stopping on validation
NDCG@10 with the best epoch restored, and checkpoints that resume after a kill."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..atomic import atomic_path
from ..config import TrainConfig
from ..data.dataset import Dataset
from ..progress import progress_bar
from .examples import Windows, build_windows
from .loss import full_softmax_loss, mixed_log_q, sampled_softmax_loss
from .sampler import FrequencyEstimator, sample_uniform
from .twotower import TwoTowerModel

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainReport:
    """What training did: per-epoch loss and validation score, the epoch kept, and how long it took."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    seconds: float = 0.0
    resumed_from: int = 0


def train_towers(model: TwoTowerModel, data: Dataset, cfg: TrainConfig,
                 validate: Callable[[TwoTowerModel], float] | None = None,
                 checkpoint_dir: Path | None = None, show_progress: bool = True, resume_key: str = "") -> TrainReport:
    """Fit `model` on `data`'s event histories. `validate(model) -> NDCG@10` drives early stopping;
    without it every epoch runs and the last one is kept. A checkpoint in `checkpoint_dir` is resumed only
    when it was written under the same `resume_key` (e.g. a hash of the config and the data)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    windows = build_windows(data, model.cfg.max_history, cfg.max_explicit_negatives)
    full = model.n_items <= cfg.full_softmax_max_items
    estimator = FrequencyEstimator(model.n_items, cfg.frequency_decay)
    context = {k: torch.as_tensor(np.concatenate([v, np.zeros((1,) + v.shape[1:], v.dtype)]))
               for k, v in data.context_features.items()}  # row -1 = padding -> zeros
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    report, best_state, bad_epochs, start = TrainReport(), None, 0, 0

    ckpt_path = checkpoint_dir / CHECKPOINT if checkpoint_dir else None
    state = torch.load(ckpt_path, weights_only=True) if ckpt_path is not None and ckpt_path.is_file() else None
    if state is not None and state.get("key") != resume_key:
        log.warning("ignoring %s: it was written for other data or settings", ckpt_path)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        estimator.load_state_dict(state["estimator"])
        report, best_state = TrainReport(**state["report"]), state["best_state"]
        bad_epochs, start = state["bad_epochs"], state["epoch"]
        report.resumed_from = start
        log.info("resumed training from %s after epoch %d", ckpt_path, start)

    n_batches = (len(windows) + cfg.batch_size - 1) // cfg.batch_size
    lengths = (windows.targets > 0).sum(1)
    per_batch = max(float(lengths.sum()) / n_batches, 1.0)      # examples in an average batch
    t0 = time.perf_counter() - report.seconds
    with progress_bar(show_progress) as bar:
        task = bar.add_task("training", total=cfg.epochs * n_batches, completed=start * n_batches, rate="")
        for epoch in range(start, cfg.epochs):
            if bad_epochs >= cfg.patience:
                break
            model.train()
            perm = length_batches(torch.randperm(len(windows), generator=gen), lengths, cfg.batch_size)
            losses, seen, t_epoch = [], 0, time.perf_counter()
            for b in range(n_batches):
                idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size].numpy()
                loss, n = _batch_loss(model, windows, idx, context, full, estimator, cfg, gen)
                opt.zero_grad(set_to_none=True)
                # a batch counts by its examples: batches of short windows (length-sorted) weigh less
                (loss * (n / per_batch)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                losses.append(loss.item())
                seen += n
                bar.update(task, advance=1, description=f"epoch {epoch + 1} loss {np.mean(losses):.3f}",
                           rate=f"{seen / (time.perf_counter() - t_epoch):,.0f} ex/s")
            row = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
            if validate is not None:
                model.eval()
                row["val_ndcg@10"] = score = float(validate(model))
                if score > report.best_score:
                    report.best_score, report.best_epoch, bad_epochs = score, epoch + 1, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_epochs += 1
                bar.update(task, description=f"epoch {epoch + 1} val NDCG@10 {score:.4f} (best {report.best_score:.4f})")
            report.epochs.append(row)
            report.seconds = time.perf_counter() - t0
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, resume_key, model, opt, gen, estimator, report, best_state, bad_epochs,
                                 epoch + 1)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        report.best_epoch = len(report.epochs)
    model.eval()
    report.seconds = time.perf_counter() - t0
    return report


def length_batches(perm: torch.Tensor, lengths: np.ndarray, batch_size: int, chunk_batches: int = 32,
                   ) -> torch.Tensor:
    """The shuffled window order with each run of `chunk_batches` batches sorted by history length, so a
    batch holds windows of similar length and is cut to its longest (padding is most of a short-sequence
    log's windows); the batches stay in random order across the epoch."""
    order = perm.numpy()
    chunk = batch_size * chunk_batches
    parts = [part[np.argsort(lengths[part], kind="stable")]
             for part in np.split(order, range(chunk, len(order), chunk))]
    batches = np.split(np.concatenate(parts), range(batch_size, len(order), batch_size))
    pick = np.random.default_rng(int(order[0]) if len(order) else 0).permutation(len(batches))
    return torch.as_tensor(np.concatenate([batches[i] for i in pick]) if batches else order)


def _batch_loss(model: TwoTowerModel, w: Windows, idx: np.ndarray, context: dict[str, torch.Tensor], full: bool,
                estimator: FrequencyEstimator, cfg: TrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    first = int((w.targets[idx] > 0).any(0).argmax())      # columns before it are padding in every window
    inputs = torch.as_tensor(w.inputs[idx, first:])
    targets = torch.as_tensor(w.targets[idx, first:])
    weights = torch.as_tensor(w.weights[idx, first:])
    rows = torch.as_tensor(w.rows[idx, first:])
    users = torch.as_tensor(w.users[idx])
    ctx = {k: v[rows] for k, v in context.items()} or None
    valid = targets > 0
    if full:
        items = model.all_item_vectors()
        q = model.queries(inputs, users, ctx, items)[valid]
        return full_softmax_loss(q, items, targets[valid], weights[valid], model.similarity), int(valid.sum())
    q = model.queries(inputs, users, ctx)[valid]
    tgt = targets[valid]
    negatives = sample_uniform(model.n_items, cfg.uniform_negatives, gen) if cfg.uniform_negatives else None
    log_q = None
    if cfg.logq_correction:
        estimator.update(tgt)
        cand = tgt if negatives is None else torch.cat([tgt, negatives])
        log_q = mixed_log_q(estimator.probability(cand), cfg.uniform_negatives, model.n_items)
    explicit = torch.as_tensor(w.negatives[idx, first:])[valid]
    loss = sampled_softmax_loss(
        q, tgt, model.item_tower(tgt), weights[valid], model.similarity,
        negatives=negatives, negative_vectors=model.item_tower(negatives) if negatives is not None else None,
        candidate_log_q=log_q,
        explicit=explicit if explicit.shape[1] else None,
        explicit_vectors=model.item_tower(explicit) if explicit.shape[1] else None,
    )
    return loss, int(valid.sum())


def _save_checkpoint(path: Path, key: str, model, opt, gen, estimator, report, best_state, bad_epochs, epoch) -> None:
    state = {"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "estimator": estimator.state_dict(), "report": asdict(report),
             "best_state": best_state, "bad_epochs": bad_epochs, "epoch": epoch}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
