"""The web page and the routes it reads: the explained list is the served list, its reasons add up to the
ranker's own score, items and the model view answer; and the page itself in headless Chromium (Debian's
`chromium` and `chromium-driver`): a user's history, recommendations with reasons, an event that changes
the list, a search, an item, the model's plots. The screenshots land in $TWOTOWER_SCREENSHOTS when it is set
(benchmarks/results/ to refresh the committed ones), else in the test's temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from benchmarks.lib.service_harness import Service
from tests.conftest import missing, tiny_config
from twotower import Model
from twotower.config import ServeConfig
from twotower.explain import TOWERS
from twotower.serve import create_app
from twotower.serve.versions import ServedModels

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def page_model(small_ml, tmp_path_factory):
    """A small MovieLens model with titles, genres, its ranker and a search index."""
    from twotower.pipeline import dataset_from_frames, train_and_save

    events, items, users = small_ml
    cfg = tiny_config(rank={"candidates": 30, "slice_events": 3})
    folder = tmp_path_factory.mktemp("page") / "model"
    train_and_save(dataset_from_frames(events, items, users, cfg), cfg, folder, {}, show_progress=False)
    return folder


@pytest.fixture()
def client(page_model, tmp_path):
    served = ServedModels(str(shutil.copytree(page_model, tmp_path / "m")), events=tmp_path / "events.sqlite")
    with TestClient(create_app(served, ServeConfig())) as c:
        yield c


def test_the_explained_list_is_the_served_list_and_its_parts_sum_to_each_score(client):
    users = client.get("/users", params={"limit": 3}).json()["users"]
    for user, at in [(users[0], {"at": 893_000_000}), (users[1], {})]:     # a given time, and now (the page's)
        served = client.post("/recommend", json={"user_id": user, "k": 8, **at}).json()["items"]
        explained = client.post("/explain", json={"user_id": user, "k": 8, **at}).json()
        assert explained["ranked"] and explained["personalized"]
        assert [i["item_id"] for i in explained["items"]] == [i["item_id"] for i in served]
        assert np.allclose([i["score"] for i in explained["items"]], [i["score"] for i in served])
    for item in explained["items"]:
        parts = item["expected_value"] + item["base"] + sum(item["contributions"].values())
        assert parts == pytest.approx(item["score"], abs=1e-6)
        assert item["name"] and item["name"] != item["item_id"]          # MovieLens titles, not ids
        for reason in item["reasons"]:
            summed = sum(item["contributions"][f] for f in reason["features"])
            summed += item["base"] if reason["kind"] == TOWERS else 0.0
            assert reason["contribution"] == pytest.approx(summed, abs=1e-9)   # the words name what the trees used
            assert reason["contribution"] > 0
        assert [r["contribution"] for r in item["reasons"]] == \
            sorted((r["contribution"] for r in item["reasons"]), reverse=True)


def test_reasons_name_the_history_item_and_the_shared_categories(client):
    genres, after = [], []
    for user in client.get("/users", params={"limit": 25}).json()["users"]:
        history = {e["item_id"] for e in
                   client.get(f"/users/{user}/history", params={"limit": 10_000}).json()["events"]}
        names = set(client.post("/items/names", json={"item_ids": sorted(history)}).json()["names"].values())
        items = client.post("/explain", json={"user_id": user, "k": 20}).json()["items"]
        for item in items:
            for near in item["nearest_history"]:
                assert near["item_id"] in history and -1.0 <= near["similarity"] <= 1.0
        reasons = [r for i in items for r in i["reasons"]]
        genres += [r["text"] for r in reasons if r["kind"] == "affinity:genres"]
        named = [r["text"] for r in reasons if r["kind"] == "covisit" and "right after" in r["text"]]
        assert all(t.split("right after ", 1)[1] in names for t in named)
        after += named
    assert genres and all(t.startswith("matches your genres") for t in genres)
    assert after


def test_an_unknown_user_gets_popular_items_explained_as_such(client):
    body = client.post("/explain", json={"user_id": "nobody-at-all", "k": 3}).json()
    assert not body["personalized"] and len(body["items"]) == 3
    assert all(i["reasons"][0]["kind"] == "popular" for i in body["items"])


def test_items_names_and_the_model_view_answer(client):
    toy = client.get("/items/1").json()
    assert toy["name"] == "Toy Story (1995)" and "Comedy" in toy["attributes"]["genres"]
    assert client.get("/items/no-such-item").status_code == 404
    assert client.post("/items/names", json={"item_ids": ["1", "zz"]}).json()["names"] == \
        {"1": "Toy Story (1995)", "zz": "zz"}
    history = client.get("/users/1/history", params={"limit": 3}).json()["events"]
    assert all(e["action"] == "click" for e in history)        # MovieLens ratings are clicks by default
    model = client.get("/model").json()
    assert model["n_items"] == 1682 and model["importance"] and model["epochs"]
    for plot in model["plots"]:
        svg = client.get(plot)
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg") and b"<svg" in svg.content
    assert client.get("/model/plots/nothing.svg").status_code == 404
    assert client.post("/explain", json={"user_id": "1", "k": 0}).status_code == 422


def test_a_model_without_its_ranker_explains_retrieval_order(page_model):
    with Model(page_model, rank=False) as model:
        found = model.explain(model.active_users(1)[0], k=4)
        served = model.recommend([found.user_id], k=4)
    assert not found.ranked and [i.item_id for i in found.items] == served["item_id"].tolist()
    assert all(i.reasons[0].kind == TOWERS and not i.contributions for i in found.items)


# --- the page in a real browser --------------------------------------------------------------------------------
@pytest.fixture()
def browser():
    if not (CHROMIUM.exists() and DRIVER.exists()):
        missing("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service as DriverService
    except ImportError:
        missing("the Python package selenium is not installed")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_history_reasons_reacts_to_an_event_searches_and_opens_an_item(page_model, tmp_path,
                                                                                       browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    service = Service(shutil.copytree(page_model, tmp_path / "m"), tmp_path / "state").start()
    try:
        service.wait_ready(120)
        wait = WebDriverWait(browser, 30)
        browser.get(f"{service.base}/")
        user = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#user-list option"))[0].get_attribute("value")
        box = browser.find_element(By.ID, "user-input")
        box.send_keys(user)
        browser.find_element(By.ID, "user-go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li.rec")) == 10)
        history = browser.find_elements(By.CSS_SELECTOR, "#history li.history-item")
        assert history and "click" in history[0].text
        first = browser.find_element(By.CSS_SELECTOR, "#recs li.rec")
        reasons = first.find_elements(By.CSS_SELECTOR, ".reason")
        assert reasons and reasons[0].text.strip()
        explained = httpx.post(f"{service.base}/explain", json={"user_id": user, "k": 10}).json()
        top = explained["items"][0]
        assert first.get_attribute("data-item") == top["item_id"]
        assert reasons[0].text.startswith(top["reasons"][0]["text"])    # the page names the ranker's top reason
        shots = Path(os.environ.get("TWOTOWER_SCREENSHOTS") or tmp_path)    # a test run leaves the checkout alone
        shots.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shots / "page-user.png"))

        before = [e.get_attribute("data-item") for e in browser.find_elements(By.CSS_SELECTOR, "#recs li.rec")]
        first.find_element(By.CSS_SELECTOR, "button.send-purchase").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "Event stored"))
        after = [e.get_attribute("data-item") for e in browser.find_elements(By.CSS_SELECTOR, "#recs li.rec")]
        assert before[0] not in after and after != before                 # bought: seen, so it left the list
        newest = browser.find_element(By.CSS_SELECTOR, "#history li.history-item")
        assert "purchase" in newest.text

        browser.get(f"{service.base}/#/search?q=star%20wars")
        hits = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results li.search-hit"))
        assert any("Star Wars" in h.text for h in hits[:5])
        link = hits[0].find_element(By.CSS_SELECTOR, "a.item-link")
        title = link.text
        link.click()
        assert wait.until(seen.visibility_of_element_located((By.ID, "item-name"))).text == title
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#similar li"))

        browser.get(f"{service.base}/#/model")
        images = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-plots img"))
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                                 for i in images))
        browser.save_screenshot(str(shots / "page-model.png"))
    finally:
        service.stop()
