"""The README's commands exist as written: every verb and every --option it shows is in that verb's --help."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twotower.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()
COMMANDS = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
            for line in block.splitlines() if line.strip().startswith("twotower ")]


def test_readme_shows_commands():
    assert {c.split()[1] for c in COMMANDS} >= {"train", "recommend", "evaluate"}


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_matches_the_cli(command):
    words = command.split()
    verb = words[1:3] if words[1] in ("benchmark", "models") else words[1:2]   # verbs with sub-verbs
    if verb == ["VERB"]:
        return
    result = CliRunner().invoke(app, [*verb, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in re.findall(r"--[a-z][a-z-]+", command):
        assert option in result.output, f"{option} of `{command}` is not an option of `twotower {' '.join(verb)}`"


# set-up, benchmarks, and servers: pgvector, Redis and the service have their own tests (tests/index,
# tests/features, tests/serve)
SKIPPED = ("make ", ".venv/bin/", "--backend pgvector", "redis://localhost", "twotower serve")


def runnable(line: str) -> list[str] | None:
    """A README line as the arguments it runs with: comments cut, optional [parts] kept, and every `train`
    and every `evaluate` given the tiny config (the README's defaults train for minutes)."""
    line = line.split("#")[0].strip()
    if not line.startswith("twotower ") or " VERB " in line or any(s in line for s in SKIPPED):
        return None
    words = re.sub(r"\[([^\]]*)\]", r"\1", line).split()[1:]
    if words[0] in ("train", "evaluate") and "--config" not in words:
        words += ["--config", "my.toml"]
    return words


def test_readme_commands_run_on_small_data(small_files, tmp_path, monkeypatch):
    """Every README command that needs no server of yours, in order, on a small real log (the fixture writes
    events.csv, items.parquet and users.csv into the working directory)."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWOTOWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (tmp_path / "my.toml").write_text('[model]\ndim = 16\nmax_history = 20\nlayers = 1\nheads = 1\n'
                                      '[train]\nepochs = 2\nbatch_size = 64\nthreads = 1\n'
                                      '[rank]\ncandidates = 40\nslice_events = 3\n')
    items = pd.read_parquet(small_files["items"])
    items.head(5).assign(item_id=lambda t: "new-" + t["item_id"].astype(str)).to_csv("new_items.csv", index=False)
    (tmp_path / "gone.txt").write_text("new-" + str(items["item_id"].iloc[0]) + "\n")
    runner, ran = CliRunner(), []
    for command in COMMANDS:
        words = runnable(command)
        if words is None:
            continue
        result = runner.invoke(app, words)
        assert result.exit_code == 0, f"`twotower {' '.join(words)}` failed:\n{result.output}"
        ran.append(words[0])
    assert {"train", "recommend", "evaluate", "models", "index", "materialize"} <= set(ran)
    assert pd.read_csv("recs.csv")["user_id"].nunique() > 0
