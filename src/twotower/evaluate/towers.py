"""The two towers under the protocol: trained with early stopping on a validation `EvalSet`, scored like every
baseline. `pipeline.train_and_save` trains the served model's towers through it too."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..data.dataset import Dataset
from ..model.recommender import build_model, tower_scorer
from ..model.trainer import TrainReport, train_towers
from ..model.twotower import TwoTowerModel
from .protocol import EvalSet, Scorer, ndcg10

EARLY_STOPPING_REQUESTS = 5000     # scored after every epoch: a sample is as good a stopping signal, and cheaper


class TowerRecommender:
    """Two-tower model under the protocol; `refit` keeps the early-stopped weights, because at test time the
    validation event reaches the model through the user's history."""

    def __init__(self, cfg: Config, name: str = "TwoTower", checkpoint_dir: Path | None = None,
                 show_progress: bool = True, resume_key: str = ""):
        self.cfg, self.name = cfg, name
        self.checkpoint_dir, self.show_progress, self.resume_key = checkpoint_dir, show_progress, resume_key
        self.model: TwoTowerModel | None = None
        self.report: TrainReport | None = None

    def fit(self, train: Dataset, validation: EvalSet | None, warm_start: dict | None = None) -> dict:
        """Train (from `warm_start`, the weights of towers trained on older events of the same log, when
        given) with early stopping on `validation`."""
        self.model = build_model(train, self.cfg)
        if warm_start is not None:
            self.model.load_state_dict(warm_start)
            self.model.item_tower.keep_ids_of(self.model.item_tower.has_id)   # this data's rare items: no id
        if validation is not None:
            validation = validation.sample(EARLY_STOPPING_REQUESTS, self.cfg.train.seed)
        validate = (lambda m: ndcg10(tower_scorer(m, validation.history), validation)) if validation else None
        self.report = train_towers(self.model, train, self.cfg.train, validate, self.checkpoint_dir,
                                   self.show_progress, self.resume_key)
        return {"epoch": self.report.best_epoch}

    def refit(self, train: Dataset) -> None:
        pass

    def scorer(self, history: Dataset) -> Scorer:
        return tower_scorer(self.model, history)


def id_only(cfg: Config) -> Config:
    """The SASRec-style baseline: the same query tower over item ids alone, no features, no user id."""
    changes = dict(item_features=False, user_features=False, context_features=False, user_id=False, item_id=True)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=changes)})
