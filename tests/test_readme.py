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
