"""The MLflow registry as a user drives it: register runs as versions, move and roll back an alias, load by
URI, and refuse a version whose files changed, or a URI that tries to leave the artifact root."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import twotower
from twotower.cli import app
from twotower.config import RegistryConfig
from twotower.errors import InputError
from twotower.registry.manifest import MANIFEST
from twotower.registry.mlflow_registry import Registry, parse_uri


@pytest.fixture(scope="module")
def registry(tiny_model, tmp_path_factory):
    """A private registry with two versions of `shop`, both from the tiny model's folder."""
    home = tmp_path_factory.mktemp("registry")
    cfg = RegistryConfig(root=str(home), tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    reg = Registry(cfg)
    report = json.loads((tiny_model[0] / "model.json").read_text())["training"]
    for _ in range(2):
        run = reg.log_training(tiny_model[0], twotower.load_config(None), report["epochs"], {"val_ndcg@10": 0.5})
        reg.register("shop", run)
    return reg


@pytest.mark.parametrize("uri", ["models:/../shop/1", "models:/shop/..", "models:/shop/1/../../2",
                                 "models:/%2e%2e/1", "models:/shop@..", "models:/shop@%2e%2e", "models:///etc/passwd",
                                 "models:/shop/-1", "models:/shop", "models:/.shop/1", "models:/shop/1%2f..",
                                 "models:/shop/01", "models:/shop/\u0661",
                                 "runs:/abc/model"])
def test_uris_that_are_not_plain_names_are_refused(uri):
    with pytest.raises(InputError):
        parse_uri(uri)


def test_a_version_source_outside_the_artifact_root_is_refused(registry, tmp_path):
    with pytest.raises(InputError, match="outside the registry's artifact root"):
        registry._local((tmp_path / "elsewhere").as_uri())
    with pytest.raises(InputError, match="outside the registry's artifact root"):
        registry._local(str(registry.artifact_root / ".." / "mlflow.db"))


def test_plain_uris_parse():
    assert parse_uri("models:/shop/3") == ("shop", "3", None)
    assert parse_uri("models:/shop-2_b@champion") == ("shop-2_b", None, "champion")


def test_versions_carry_the_run_and_the_data_fingerprint(registry, tiny_model):
    versions = registry.versions("shop")
    numbers = [v.version for v in versions]
    assert numbers == sorted(numbers, key=int, reverse=True) and {"1", "2"} <= set(numbers), "newest first"
    v = next(v for v in versions if v.version == "2")
    assert v.metrics["val_ndcg_at_10"] == 0.5
    assert v.params["model.dim"] == "64"
    expected = json.loads((tiny_model[0] / "model.json").read_text())["data"]
    assert v.fingerprint == expected and v.fingerprint


def test_promote_rollback_and_load_follow_the_alias(registry):
    assert registry.promote("shop", "1") is None
    assert registry.promote("shop", "2") == "1"
    with twotower.load("models:/shop@champion", registry=registry.cfg) as model:
        assert model.folder.name == "2"
        assert len(model.recommend("u001", k=5)) == 5
    assert registry.rollback("shop") == ("2", "1")
    with twotower.load("models:/shop@champion", registry=registry.cfg) as model:
        assert model.folder.name == "1"
    with pytest.raises(InputError, match="no earlier version"):
        registry.rollback("shop")
    with pytest.raises(InputError, match="no alias 'challenger'"):
        twotower.load("models:/shop@challenger", registry=registry.cfg)
    with pytest.raises(InputError, match="no such version"):
        twotower.load("models:/shop/9", registry=registry.cfg)


def _artifacts(registry, version: str):
    return registry._local(registry._version("shop", version).source)


@pytest.mark.parametrize("damage", ["one byte", "missing", "added"])
def test_a_registered_version_whose_files_changed_is_refused(registry, tiny_model, damage):
    run = registry.log_training(tiny_model[0], twotower.load_config(None), [], {})     # a fresh version to damage
    version = registry.register("shop", run)
    folder = _artifacts(registry, version)
    target = folder / "weights.pt"
    if damage == "one byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 1
        target.write_bytes(bytes(data))
        expected = "weights.pt: changed after"
    elif damage == "missing":
        target.unlink()
        expected = "weights.pt: is missing"
    else:
        (folder / "ranker" / "extra.txt").write_text("x")
        expected = "extra.txt: was added"
    with pytest.raises(InputError, match=expected):
        twotower.load(f"models:/shop/{version}", registry=registry.cfg)


def test_a_changed_serving_copy_is_refused_too(registry):
    with twotower.load("models:/shop/2", registry=registry.cfg):
        pass
    copy = registry.root / "serving" / "shop" / "2"
    assert (copy / MANIFEST).is_file()
    (copy / "model.json").write_text((copy / "model.json").read_text() + " ")
    with pytest.raises(InputError, match="model.json: changed after"):
        twotower.load("models:/shop/2", registry=registry.cfg)


def test_cli_models_verbs(registry, tmp_path):
    config = tmp_path / "registry.toml"
    config.write_text(f'[registry]\nroot = "{registry.root}"\ntracking_uri = "{registry.tracking_uri}"\n')
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "shop", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "shop" in listed.output and "0.5000" in listed.output
    promoted = runner.invoke(app, ["models", "promote", "shop", "2", "--alias", "challenger", "-c", str(config)])
    assert promoted.exit_code == 0 and "shop@challenger -> version 2" in promoted.output
    shown = runner.invoke(app, ["models", "show", "shop@challenger", "-c", str(config)])
    assert shown.exit_code == 0 and '"version": "2"' in shown.output and "data_fingerprint" in shown.output
    bad = runner.invoke(app, ["models", "show", "../shop", "-c", str(config)])
    assert bad.exit_code == 2 and "not a valid registered model name" in bad.output
