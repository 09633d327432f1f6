"""Train the towers: mini-batches of history windows, the retrieval loss, early stopping on validation
NDCG@10 with the best epoch restored, and checkpoints that resume after a kill."""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import distributed
from ..atomic import atomic_path
from ..config import TrainConfig
from ..data.dataset import Dataset
from ..progress import progress_bar
from .examples import Windows, build_windows
from . import ddp
from .extra_towers import PAIR_ITEMS, pair_loss, pair_names
from .loss import full_softmax_loss, mixed_log_q, positive_loss, sampled_softmax_logits
from .sampler import FrequencyEstimator, sample_uniform
from .twotower import TwoTowerModel

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainReport:
    """What training did: per-epoch loss, validation score and examples/s, the epoch kept, how long it took,
    how many processes shared it, and what the in-batch softmax saw (steps, this rank's examples, the
    global batch's examples, logit columns: each summed over steps; sampled softmax only)."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    seconds: float = 0.0
    resumed_from: int = 0
    processes: int = 1
    in_batch: dict = field(default_factory=dict)


def train_towers(model: TwoTowerModel, data: Dataset, cfg: TrainConfig,
                 validate: Callable[[TwoTowerModel], float] | None = None,
                 checkpoint_dir: Path | None = None, show_progress: bool = True, resume_key: str = "") -> TrainReport:
    """Fit `model` on `data`'s event histories. `validate(model) -> NDCG@10` drives early stopping;
    without it every epoch runs and the last one is kept. A checkpoint in `checkpoint_dir` is resumed only
    when it was written under the same `resume_key` (e.g. a hash of the config and the data).

    Under a process group (`twotower.distributed`) every rank calls this with the same data and settings:
    each computes its share of every batch (`cfg.batch_size` is the global batch), the in-batch candidates
    are gathered from every rank, DistributedDataParallel syncs the gradients; rank 0 alone validates,
    decides early stopping (every rank obeys) and writes the checkpoint. Every rank ends with the same weights."""
    group = distributed.current()
    _set_threads(cfg, group)
    torch.manual_seed(cfg.seed + group.rank)                 # dropout: each rank its own draws
    gen = torch.Generator().manual_seed(cfg.seed)             # the same on every rank: batch order, negatives
    windows = build_windows(data, model.cfg.max_history, cfg.max_explicit_negatives)
    full = model.n_items <= cfg.full_softmax_max_items
    catalog = trained_items(data)
    pairs = pair_names(cfg.pairs, model.cfg.towers)
    estimator = FrequencyEstimator(model.n_items, cfg.frequency_decay)
    context = {k: torch.as_tensor(np.concatenate([v, np.zeros((1,) + v.shape[1:], v.dtype)]))
               for k, v in data.context_features.items()}  # row -1 = padding -> zeros
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    report, best_state, bad_epochs, start = TrainReport(processes=group.world), None, 0, 0

    ckpt_path = checkpoint_dir / CHECKPOINT if checkpoint_dir and group.leader else None
    state = _read_checkpoint(ckpt_path, resume_key)
    if group.world > 1:
        state = ddp.broadcast(state)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        estimator.load_state_dict(state["estimator"])
        report, best_state = TrainReport(**state["report"]), state["best_state"]
        bad_epochs, start = state["bad_epochs"], state["epoch"]
        report.resumed_from, report.processes = start, group.world
        if not group.leader:
            torch.manual_seed(cfg.seed + group.rank + 7919 * start)
        log.info("resumed training from %s after epoch %d", checkpoint_dir, start)
    step = ddp.data_parallel(model) if group.world > 1 else None

    bounds = ddp.step_bounds(len(windows), cfg.batch_size, group.world)
    n_batches = len(bounds) - 1
    lengths = (windows.targets > 0).sum(1)
    per_batch = max(float(lengths.sum()) / n_batches, 1.0)      # examples in an average (global) batch
    t0 = time.perf_counter() - report.seconds
    with progress_bar(show_progress and group.leader) as bar:
        task = bar.add_task("training", total=cfg.epochs * n_batches, completed=start * n_batches, rate="")
        for epoch in range(start, cfg.epochs):
            if bad_epochs >= cfg.patience:
                break
            (step or model).train()
            perm = length_batches(torch.randperm(len(windows), generator=gen), lengths, cfg.batch_size)
            losses, mine, seen, t_epoch = [], 0, 0, time.perf_counter()
            for b in range(n_batches):
                idx = perm[bounds[b]:bounds[b + 1]].numpy()
                args = (windows, ddp.rank_share(idx, group.rank, group.world), context, full, estimator, cfg, gen,
                        group.world, catalog, pairs)
                loss, n, columns = step(_batch_loss, *args) if step is not None else _batch_loss(model, *args)
                opt.zero_grad(set_to_none=True)
                # a batch counts by its examples: batches of short windows (length-sorted) weigh less; under
                # DDP each rank's loss covers its rows, and DDP averages the ranks' gradients: times world
                (loss * (n / per_batch * group.world)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                losses.append(loss.item() * n)
                mine += n
                seen += int(lengths[idx].sum())           # the global batch's examples
                _count_in_batch(report.in_batch, n, columns)
                bar.update(task, advance=1, description=f"epoch {epoch + 1} loss {sum(losses) / mine:.3f}",
                           rate=f"{seen / (time.perf_counter() - t_epoch):,.0f} ex/s")
            seconds = time.perf_counter() - t_epoch
            total = ddp.all_sum([sum(losses)])[0] if group.world > 1 else sum(losses)
            row = {"epoch": epoch + 1, "loss": total / max(seen, 1), "examples_per_s": round(seen / seconds, 1)}
            if validate is not None:
                model.eval()
                score = float(validate(model)) if group.leader else 0.0
                row["val_ndcg@10"] = score = ddp.broadcast(score) if group.world > 1 else score
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


def _set_threads(cfg: TrainConfig, group: distributed.Group) -> None:
    """cfg.threads when set; else all cores for one process, or the cores shared out among this machine's ranks."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif group.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(group.local_world, 1)))


def _read_checkpoint(path: Path | None, key: str) -> dict | None:
    """The checkpoint at `path` when there is one written under `key`."""
    if path is None or not path.is_file():
        return None
    state = torch.load(path, weights_only=True)
    if state.get("key") != key:
        log.warning("ignoring %s: it was written for other data or settings", path)
        return None
    return state


def _count_in_batch(stats: dict, n: int, columns: tuple[int, int]) -> None:
    """Add one step to the report's in-batch counts (`columns`: the global batch's examples and the logits'
    width; (0, 0) under the full softmax, which has no in-batch candidates)."""
    if columns[1]:
        for key, value in zip(("steps", "local_examples", "global_examples", "logit_columns"), (1, n, *columns)):
            stats[key] = stats.get(key, 0) + value


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


def trained_items(data: Dataset) -> torch.Tensor:
    """The item codes with an event in the training data (chosen, or shown and not chosen): the softmax's
    negatives are drawn from them. An item in the items table that no event mentions is no evidence against
    itself: as a negative it would be pushed below every query, and its content could never bring it back
    (cold start)."""
    items = np.unique(data.events["item"].to_numpy())
    return torch.as_tensor(items[items > 0], dtype=torch.long)


def _batch_loss(model: TwoTowerModel, w: Windows, idx: np.ndarray, context: dict[str, torch.Tensor], full: bool,
                estimator: FrequencyEstimator, cfg: TrainConfig, gen: torch.Generator, world: int = 1,
                catalog: torch.Tensor | None = None, pairs: list = ()) -> tuple[torch.Tensor, int, tuple[int, int]]:
    """(loss over the windows `idx`, their examples, (the global batch's examples, the logits' width));
    with `world` > 1 a collective: the in-batch candidates and the logQ estimate cover every rank's rows.
    `catalog`: the item codes negatives come from (default: every item). `pairs` (a, b, weight) of towers
    add their agreement over a sample of the catalog (`extra_towers`)."""
    first = int((w.targets[idx] > 0).any(0).argmax())      # columns before it are padding in every window
    inputs = torch.as_tensor(w.inputs[idx, first:])
    targets = torch.as_tensor(w.targets[idx, first:])
    weights = torch.as_tensor(w.weights[idx, first:])
    rows = torch.as_tensor(w.rows[idx, first:])
    users = torch.as_tensor(w.users[idx])
    ctx = {k: v[rows] for k, v in context.items()} or None
    valid = targets > 0
    n = int(valid.sum())
    if full:
        items = model.all_item_vectors()
        q = model.queries(inputs, users, ctx, items)[valid]
        loss = full_softmax_loss(q, items, targets[valid], weights[valid], model.similarity, catalog)
        return loss + _pairs_loss(model, pairs, gen), n, (0, 0)
    q = model.queries(inputs, users, ctx)[valid]
    tgt = targets[valid]
    batch, vectors, offset = ddp.gather_batch(tgt, model.item_tower(tgt)) if world > 1 else \
        (tgt, model.item_tower(tgt), 0)
    pool = len(catalog) if catalog is not None else model.n_items
    negatives = sample_uniform(pool, cfg.uniform_negatives, gen) if cfg.uniform_negatives else None
    if negatives is not None and catalog is not None:
        negatives = catalog[negatives - 1]
    log_q = None
    if cfg.logq_correction:
        estimator.update(batch)                 # every rank sees the global batch: the same estimate everywhere
        cand = batch if negatives is None else torch.cat([batch, negatives])
        log_q = mixed_log_q(estimator.probability(cand), cfg.uniform_negatives, pool)
    explicit = torch.as_tensor(w.negatives[idx, first:])[valid]
    logits = sampled_softmax_logits(
        q, batch, vectors, model.similarity,
        negatives=negatives, negative_vectors=model.item_tower(negatives) if negatives is not None else None,
        candidate_log_q=log_q,
        explicit=explicit if explicit.shape[1] else None,
        explicit_vectors=model.item_tower(explicit) if explicit.shape[1] else None,
        offset=offset,
    )
    return positive_loss(logits, weights[valid], offset) + _pairs_loss(model, pairs, gen), n, (len(batch), logits.shape[1])


def _pairs_loss(model: TwoTowerModel, pairs: list, gen: torch.Generator) -> torch.Tensor | float:
    """The configured pairs' agreement over PAIR_ITEMS items drawn from the whole catalog (items no event
    mentions included: the catalog grounds their text and image too); 0 without pairs."""
    if not pairs:
        return 0.0
    items = torch.unique(torch.randint(1, model.n_items + 1, (min(PAIR_ITEMS, model.n_items),), generator=gen))
    names = {name for a, b, _ in pairs for name in (a, b)}
    return pair_loss({name: model.tower_vectors(name, items) for name in names}, pairs)


def _save_checkpoint(path: Path, key: str, model, opt, gen, estimator, report, best_state, bad_epochs, epoch) -> None:
    state = {"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "estimator": estimator.state_dict(), "report": asdict(report),
             "best_state": best_state, "bad_epochs": bad_epochs, "epoch": epoch}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
