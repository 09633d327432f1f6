"""`twotower report`: one self-contained HTML file with the held-out evaluation (served path beside the
baselines, recorded with the version), and two versions compared with paired differences."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from twotower.cli import app
from twotower.errors import InputError
from twotower.html_report import write_report
from twotower.insight import EVALUATION_FILE, model_facts


def html_table(text: str, header: str) -> pd.DataFrame:
    """The report's first table whose header row names `header`, as text cells."""
    table = next(t for t in re.findall(r"<table>(.*?)</table>", text, re.S) if f"<th>{header}</th>" in t)
    rows = [re.findall(r"<t[hd]>(.*?)</t[hd]>", r) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    return pd.DataFrame(rows[1:], columns=rows[0])


@pytest.fixture()
def held_out(tiny_model, tmp_path):
    """(a private copy of the tiny model, a test file: each user's next event, a day after the log)."""
    model = shutil.copytree(tiny_model[0], tmp_path / "model")
    log = pd.read_csv(tiny_model[1])
    last = log.sort_values("timestamp").groupby("user_id").tail(1)
    test = pd.DataFrame({"user_id": last["user_id"], "timestamp": last["timestamp"] + 86_400, "action": "click",
                         "item_id": [f"i{(int(i[1:]) + 1) % 30:03d}" for i in last["item_id"]]})
    path = tmp_path / "test.csv"
    test.to_csv(path, index=False)
    return model, path


def test_the_report_evaluates_the_served_path_beside_the_baselines_and_records_it(held_out, tmp_path):
    model, test = held_out
    out = write_report(model, tmp_path / "report.html", test, log=lambda _: None)
    text = out.read_text()
    assert text.startswith("<!doctype html>") and "<script" not in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)     # self-contained: nothing fetched
    assert text.count("<svg") >= 7                              # metric@K, training, scores, popularity, ...
    recorded = json.loads((model / EVALUATION_FILE).read_text())
    names = [row["model"] for row in recorded["rows"]]
    assert names[:2] == ["twotower (served, ranked)", "twotower (served, retrieval order)"]
    assert {"Popularity", "iALS", "EASE"} <= set(names)
    assert recorded["targets"] + recorded["dropped"] + recorded["repeats"] == 40 and recorded["targets"] > 20
    shown = html_table(text, "Coverage@10").set_index("model").astype(float)
    for row in recorded["rows"]:
        assert 0.0 <= row["NDCG@10"] <= row["HR@10"] <= row["HR@20"] <= 1.0
        assert shown.loc[row["model"], "NDCG@10"] == pytest.approx(row["NDCG@10"], abs=1e-4)
    assert model_facts(model)["evaluation"]["rows"][0]["NDCG@10"] == recorded["rows"][0]["NDCG@10"]


def test_a_version_compared_with_itself_differs_nowhere(held_out, tmp_path):
    model, test = held_out
    twin = shutil.copytree(model, tmp_path / "twin")
    text = write_report(model, tmp_path / "compare.html", test, twin, baselines=False, log=lambda _: None).read_text()
    assert "is <b>not clearly different</b>" in text
    table = html_table(text, "users better")
    table[["difference", "users better", "users worse"]] = table[["difference", "users better", "users worse"]].astype(float)
    assert (table["difference"] == 0).all() and (table["users better"] == 0).all() and (table["users worse"] == 0).all()


def test_two_versions_are_paired_by_user_id_not_by_their_own_codes(held_out, tiny_model, tmp_path):
    from tests.conftest import synthetic_log
    from twotower.config import load_config
    from twotower.html_report import held_out_evaluation, paired_ranks
    from twotower.pipeline import load_inputs, train_and_save

    model, test = held_out
    log = synthetic_log()
    fewer = tmp_path / "fewer.csv"
    log[log["user_id"] != "u000"].iloc[::-1].to_csv(fewer, index=False)     # other users first: other codes
    cfg = load_config(tiny_model[2])
    other = tmp_path / "other"
    train_and_save(load_inputs(fewer, None, None, cfg), cfg, other, {}, show_progress=False, ranker=False)
    a = held_out_evaluation(model, test, baselines=False, log=lambda _: None)
    b = held_out_evaluation(other, test, baselines=False, log=lambda _: None)
    common, ranks_a, ranks_b = paired_ranks(a, b)
    assert "u000" in set(a.users) and "u000" not in set(b.users) and "u000" not in set(common)
    assert len(common) == len(set(a.users) & set(b.users)) and len(ranks_a) == len(ranks_b) == len(common)
    by_user_a = dict(zip(a.users, a.ranks["twotower (served, ranked)"]))
    assert all(by_user_a[u] == r for u, r in zip(common, ranks_a))


def test_compare_without_held_out_events_is_one_clear_error(held_out, tmp_path):
    model, _ = held_out
    with pytest.raises(InputError, match="--test"):
        write_report(model, tmp_path / "r.html", None, model)
    result = CliRunner().invoke(app, ["report", "-m", str(model), "--compare", str(model), "-o",
                                      str(tmp_path / "r.html")])
    assert result.exit_code != 0 and "--test" in result.output and not (tmp_path / "r.html").exists()


def test_a_report_without_test_events_still_shows_the_version(held_out, tmp_path):
    model, _ = held_out
    result = CliRunner().invoke(app, ["report", "-m", str(model), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.html").read_text()
    assert "Popularity bias" in text and "Evaluation against the baselines" not in text
    assert not (model / EVALUATION_FILE).exists()
