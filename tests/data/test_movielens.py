"""MovieLens loading, and the download path against a local (loopback) server: checksum and errors."""

import http.server
import threading
import zipfile
from dataclasses import replace

import pytest

from twotower.data import movielens
from twotower.data.movielens import fetch, load_ml100k, load_ml1m, locate
from twotower.errors import InputError
from tests.conftest import missing


def test_ml100k_loads_as_contract_tables(ml100k):
    events, items, users = ml100k
    assert len(events) == 100_000 and events["user_id"].nunique() == 943
    assert list(events.columns) == ["user_id", "item_id", "timestamp"]
    assert len(items) == 1682 and items.loc[0, "genres"] == "Animation|Children's|Comedy"
    assert set(users.columns) == {"user_id", "age", "gender", "occupation", "zip_region"}


def test_ml1m_pairs_use_file_order_as_the_clock():
    try:
        folder = locate("ml-1m", download=False)
    except InputError:
        missing("MovieLens-1M not available")
    events, items, users = load_ml1m(folder)
    assert len(events) == 1_000_209 and events["timestamp"].is_monotonic_increasing
    assert events.iloc[0].tolist()[:2] == [1, 1193]
    assert len(users) == 6040 and "genres" in items.columns


@pytest.fixture()
def server(tmp_path):
    """A loopback HTTP server over tmp_path/www; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **k)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def zip_ml100k(src, dest, tamper=False):
    with zipfile.ZipFile(dest, "w") as zf:
        for name in ("u.data", "u.item", "u.user"):
            data = (src / name).read_bytes()
            zf.writestr(f"ml-100k/{name}", data + (b"1\t1\t5\t1\n" if tamper and name == "u.data" else b""))


def test_download_checks_the_checksum_and_unpacks_into_the_cache(server, tmp_path, monkeypatch):
    www, url = server
    zip_ml100k(locate("ml-100k", download=False), www / "ml-100k.zip")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(movielens.SOURCES, "ml-100k", replace(movielens.SOURCES["ml-100k"], url=f"{url}/ml-100k.zip"))
    folder = fetch("ml-100k")
    assert folder == tmp_path / "cache" / "twotower" / "ml-100k"
    assert len(load_ml100k(folder)[0]) == 100_000


def test_a_tampered_download_is_refused(server, tmp_path, monkeypatch):
    www, url = server
    zip_ml100k(locate("ml-100k", download=False), www / "ml-100k.zip", tamper=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(movielens.SOURCES, "ml-100k", replace(movielens.SOURCES["ml-100k"], url=f"{url}/ml-100k.zip"))
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch("ml-100k")
    assert not (tmp_path / "cache" / "twotower" / "ml-100k").exists()


def test_no_network_says_where_to_put_the_files(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(movielens.SOURCES, "ml-100k", replace(movielens.SOURCES["ml-100k"], url="http://127.0.0.1:9/x.zip"))
    with pytest.raises(InputError, match="download .* failed.*set TWOTOWER_DATA"):
        fetch("ml-100k")
