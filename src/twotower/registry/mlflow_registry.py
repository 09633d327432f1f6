"""Training runs and registered model versions in MLflow, embedded by default: a SQLite tracking store and a
local artifact root under the project data folder. A registered version is the model folder's files plus a
manifest (sha256 of each); it is never edited. Serving opens a verified copy of it (its online store and
ingested events live in that copy), so the registered files stay as they were."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, RegistryConfig
from ..errors import InputError
from .manifest import MANIFEST, verify, version_files, write_manifest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"      # before mlflow is ever imported
MODEL_ARTIFACTS = "model"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")     # no dots, slashes or escapes: a name is never a path
ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
VERSION = re.compile(r"[1-9][0-9]{0,8}")              # one spelling per version: no 01, no non-ASCII digits
URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))")
HISTORY_TAG = "twotower.alias_history.{alias}"        # versions an alias pointed at before, oldest first


def home(cfg: RegistryConfig | None = None) -> Path:
    """The project data folder: the config's `registry.root` where it sets one, else $TWOTOWER_HOME, else
    .twotower in the working directory."""
    cfg = cfg or RegistryConfig()
    chosen = cfg.root if "root" in cfg.model_fields_set else os.environ.get("TWOTOWER_HOME") or cfg.root
    return Path(chosen).absolute()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError("model name", f"{name!r} is not a valid registered model name",
                         "use letters, digits, '-' and '_' (up to 100, starting with a letter or digit)")
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS.fullmatch(alias):
        raise InputError("alias", f"{alias!r} is not a valid alias",
                         "use letters, digits, '-' and '_', starting with a letter (e.g. champion)")
    return alias


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """models:/NAME/VERSION or models:/NAME@ALIAS -> (name, version, alias); anything else, or a part that is
    not a plain name or number (`..`, `%2e`, slashes), is an error."""
    m = URI.fullmatch(uri)
    if not m:
        raise InputError(uri, "is not a registry URI", "use models:/NAME/VERSION or models:/NAME@ALIAS")
    name, version, alias = m["name"], m["version"], m["alias"]
    check_name(name)
    if version is not None and not VERSION.fullmatch(version):
        raise InputError(uri, f"version {version!r} is not a number", "use models:/NAME/VERSION, e.g. models:/shop/3")
    if alias is not None:
        check_alias(alias)
    return name, version, alias


@dataclass
class VersionInfo:
    """One registered version as `models list/show` print it."""

    name: str
    version: str
    run_id: str
    created: int                  # ms since the epoch
    aliases: list[str]
    metrics: dict
    params: dict
    fingerprint: dict
    source: str


class Registry:
    """MLflow runs and the model registry for this project."""

    def __init__(self, cfg: RegistryConfig | None = None):
        self.cfg = cfg or RegistryConfig()
        self.root = home(self.cfg)
        self.tracking_uri = self.cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{self.root / 'mlflow.db'}"
        self.root.mkdir(parents=True, exist_ok=True)
        from mlflow import MlflowClient      # imported here, after the telemetry switch above

        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @property
    def artifact_root(self) -> Path:
        return self.root / "artifacts"

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.cfg.experiment, artifact_location=self.artifact_root.as_uri())

    # --- runs ----------------------------------------------------------------------------------------------
    def log_training(self, model_dir: Path, cfg: Config, epochs: list[dict], metrics: dict[str, float]) -> str:
        """One MLflow run for a trained model folder: its config as parameters, per-epoch loss and validation
        NDCG@10, final metrics, and the folder's files (with their manifest) as the run's `model` artifacts.
        Returns the run id (recorded in model.json)."""
        from mlflow.entities import Metric

        model_dir = Path(model_dir)
        run = self.client.create_run(self._experiment_id(), tags={"twotower.model_dir": str(model_dir.absolute())},
                                     run_name=model_dir.name)
        run_id = run.info.run_id
        try:
            now = _now_ms()
            series = [Metric(key, float(e[field]), now, int(e["epoch"]))
                      for e in epochs for key, field in (("epoch.train_loss", "loss"), ("epoch.val_ndcg_at_10", "val_ndcg@10"))
                      if e.get(field) is not None]
            series += [Metric(_metric_key(k), float(v), now, 0) for k, v in metrics.items() if v is not None]
            self._log(run_id, cfg, series)
            with tempfile.TemporaryDirectory(prefix="twotower-version-") as staging:
                copy = Path(staging) / MODEL_ARTIFACTS
                _copy_version(model_dir, copy)
                write_manifest(copy)
                self.client.log_artifacts(run_id, str(copy), MODEL_ARTIFACTS)
            self.client.set_terminated(run_id)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        return run_id

    def log_evaluation(self, table, cfg: Config, source: str) -> str:
        """One MLflow run for an evaluation table (one row per model, served rows and baselines): each model's
        metrics under `<model>/<metric>`, the config as parameters. Returns the run id."""
        from mlflow.entities import Metric

        run = self.client.create_run(self._experiment_id(), tags={"twotower.kind": "evaluation",
                                                                  "twotower.events": source},
                                     run_name=f"evaluate {Path(source).name}")
        run_id = run.info.run_id
        now = _now_ms()
        metrics = [Metric(_metric_key(f"{re.sub(r'[^A-Za-z0-9]+', '_', row['model']).strip('_')}/{col}"),
                          float(row[col]), now, 0)
                   for row in table.to_dict("records") for col in table.columns
                   if col != "model" and isinstance(row[col], (int, float)) and row[col] == row[col]]
        self._log(run_id, cfg, metrics)
        self.client.set_terminated(run_id)
        return run_id

    def _log(self, run_id: str, cfg: Config, metrics: list) -> None:
        """The config as the run's parameters and the metrics, in batches MLflow accepts."""
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in _flat(cfg.model_dump()).items()]
        for lo in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[lo:lo + 100])
        for lo in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[lo:lo + 500])

    # --- versions ------------------------------------------------------------------------------------------
    def register(self, name: str, run_id: str) -> str:
        """A new version of `name` from a run's model artifacts; returns its number."""
        from mlflow.exceptions import MlflowException

        check_name(name)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="twotower model versions")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACTS}"
        return str(self.client.create_model_version(name, source, run_id=run_id).version)

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of `name`, newest first."""
        self._require_model(name)
        found = self.client.search_model_versions(f"name = '{check_name(name)}'")
        return sorted((self.info(name, v.version) for v in found), key=lambda v: -int(v.version))

    def info(self, name: str, version: str) -> VersionInfo:
        mv = self._version(name, version)
        run = self.client.get_run(mv.run_id)
        aliases = [a for a, v in (self.client.get_registered_model(name).aliases or {}).items()
                   if str(v) == str(version)]
        fingerprint = {}
        meta = self._local(mv.source) / "model.json"
        if meta.is_file():
            fingerprint = json.loads(meta.read_text()).get("data", {})
        return VersionInfo(name, str(mv.version), mv.run_id, int(mv.creation_timestamp), sorted(aliases),
                           dict(run.data.metrics), dict(run.data.params), fingerprint, mv.source)

    def resolve(self, uri: str) -> tuple[str, str]:
        """models:/NAME/VERSION or models:/NAME@ALIAS -> (name, version)."""
        name, version, alias = parse_uri(uri)
        if alias is not None:
            version = self._alias_version(name, alias)
            if version is None:
                raise InputError(uri, f"model {name!r} has no alias {alias!r}",
                                 f"set it: twotower models promote {name} VERSION --alias {alias}")
        self._version(name, version)
        return name, version

    def promote(self, name: str, version: str, alias: str = "champion") -> str | None:
        """Point `alias` at `version`; returns the version it pointed at before (kept for `rollback`)."""
        check_alias(alias)
        self._version(name, version)
        before = self._alias_version(name, alias)
        if before == str(version):
            return before
        if before is not None:
            history = self._history(name, alias) + [before]
            self.client.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history[-50:]))
        self.client.set_registered_model_alias(name, alias, str(version))
        return before

    def rollback(self, name: str, alias: str = "champion") -> tuple[str, str]:
        """Point `alias` back at the version it held before; returns (from, to)."""
        check_alias(alias)
        current = self._alias_version(name, alias)
        history = self._history(name, alias)
        if current is None or not history:
            raise InputError(f"{name}@{alias}", "has no earlier version to go back to",
                             f"promote a version first: twotower models promote {name} VERSION --alias {alias}")
        previous = history.pop()
        self.client.set_registered_model_alias(name, alias, previous)
        self.client.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history))
        return current, previous

    # --- opening a version ---------------------------------------------------------------------------------
    def serving_copy(self, uri: str) -> Path:
        """A verified folder to open the version from: the registered files are checked against their
        manifest, copied once into ROOT/serving/NAME/VERSION (its online store and ingested events live
        there), and the copy is checked again on every later open."""
        name, version = self.resolve(uri)
        what = f"models:/{name}/{version}"
        source = self._local(self._version(name, version).source)
        target = self.root / "serving" / name / version
        if not target.is_dir():
            verify(source, what)
            staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=_made(target.parent)))
            try:
                shutil.copytree(source, staging / "copy")
                verify(staging / "copy", what)
                _materialize(staging / "copy")
                try:
                    os.rename(staging / "copy", target)      # refused when another process got there first
                except OSError:
                    if not target.is_dir():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if (target / MANIFEST).read_bytes() != (source / MANIFEST).read_bytes():
            raise InputError(str(target), f"is a serving copy of another {what} (the registry was reset or the "
                             "version replaced)", "move the copy away; the next load makes a fresh one")
        verify(target, what)
        return target

    # --- internals -----------------------------------------------------------------------------------------
    def _require_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(check_name(name))
        except MlflowException as exc:
            known = ", ".join(self.names()) or "none yet"
            raise InputError(f"model {name!r}", "is not registered", f"registered models: {known}; register "
                             f"one with: twotower train ... --register {name}") from exc

    def _version(self, name: str, version: str):
        from mlflow.exceptions import MlflowException

        self._require_model(name)
        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise InputError(f"models:/{name}/{version}", "no such version",
                             f"list them: twotower models list {name}") from exc

    def _alias_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        self._require_model(name)
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def _history(self, name: str, alias: str) -> list[str]:
        tags = self.client.get_registered_model(name).tags or {}
        return json.loads(tags.get(HISTORY_TAG.format(alias=alias), "[]"))

    def _local(self, source: str) -> Path:
        """A version's artifact folder on this machine, which must lie inside the artifact root; a remote
        store's files are downloaded first."""
        if source.startswith("file:"):
            from urllib.parse import unquote, urlparse

            path = Path(unquote(urlparse(source).path)).resolve()
        elif "://" in source or source.startswith(("runs:", "models:", "mlflow-artifacts:")):
            import mlflow.artifacts

            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=self.tracking_uri,
                                                            dst_path=tempfile.mkdtemp(prefix="twotower-dl-")))
            return path
        else:
            path = Path(source).resolve()
        if not path.is_relative_to(self.artifact_root.resolve()):
            raise InputError(source, "lies outside the registry's artifact root",
                             f"keep versions under {self.artifact_root}")
        return path


def _materialize(folder: Path) -> None:
    """Load a fresh copy's online store from its offline store (a version has a ranker when it has one)."""
    from ..config import config_from_dict
    from ..features.materialize import FEATURES_DIR, materialize

    meta = json.loads((folder / "model.json").read_text())
    if (folder / FEATURES_DIR / "events.parquet").is_file():
        rank = config_from_dict(meta["config"], source=str(folder / "model.json")).rank
        record = folder / FEATURES_DIR / "online.json"
        if record.is_file():
            rank = rank.model_copy(update=json.loads(record.read_text()))
        materialize(folder, rank, meta["model_id"], show_progress=False)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _copy_version(model_dir: Path, target: Path) -> None:
    """The model's own files of a model folder (what `folder.MODEL_NAMES` names; no serving state, no
    checkpoint, nothing else the user keeps there)."""
    from ..folder import MODEL_NAMES
    from ..model.trainer import CHECKPOINT

    index_meta = model_dir / "index" / "index.json"
    if index_meta.is_file() and json.loads(index_meta.read_text()).get("backend") == "pgvector" and \
            (model_dir / "pgdata").exists():
        raise InputError(str(model_dir), "keeps its index in an embedded PostgreSQL inside the folder, which a "
                         "registered version cannot carry", "rebuild the index with FAISS (twotower index --backend "
                         "faiss) or on an external server (--dsn), then register")
    for rel in version_files(model_dir):
        if rel.split("/")[0] not in MODEL_NAMES or rel == CHECKPOINT:
            continue
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model_dir / rel, target / rel)
    if not (target / "model.json").is_file():
        raise InputError(str(model_dir), "is not a twotower model folder (no model.json)", "train one first")


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "actions":
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (dict, list)) else v
    return out


def _metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces: '@' becomes '_at_'."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name.replace("@", "_at_"))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


__all__ = ["MANIFEST", "Registry", "VersionInfo", "check_name", "home", "parse_uri"]
