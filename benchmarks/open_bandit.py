"""Open Bandit benchmark: a click ranker trained with inverse-propensity weights on one logging policy's
impressions, its off-policy click rate on another's, beside both logging policies.

    .venv/bin/python benchmarks/open_bandit.py [--train-policy bts] [--eval-policy random] [--clip 100]
"""

import os
import sys
import time
from pathlib import Path
from typing import Optional

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# development data beside the checkout, unless $TWOTOWER_DATA points elsewhere
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # the checkout: benchmarks.lib

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from twotower.cli import _run  # noqa: E402

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def benchmark_open_bandit(
        data: Optional[Path] = typer.Option(None, "--data", help="folder with {random,bts}/{all,men,women} "
                                            "(default: $TWOTOWER_DATA/open-bandit-dataset-small)"),
        train_policy: str = typer.Option("bts", "--train-policy", help="logs the ranker learns from"),
        eval_policy: str = typer.Option("random", "--eval-policy", help="logs its policy is evaluated on"),
        campaigns: str = typer.Option("all,men,women", "--campaigns"),
        clip: float = typer.Option(100.0, "--clip", help="cap on the inverse-propensity training weights"),
        out: Path = typer.Option(Path("benchmarks/results/open_bandit"), "--out", "-o", help="writes OUT.csv, OUT.png")):
    """Open Bandit: a click ranker trained with inverse-propensity weights on one policy's logged
    impressions, its off-policy click rate (IPS, SNIPS, 95% bootstrap) on another's, beside both logging
    policies' click rates."""
    from benchmarks.lib.bandit import bandit_table
    from benchmarks.lib.open_bandit_data import load_open_bandit, locate_open_bandit
    from twotower.report import frame_table, plot_policy_values, print_table, save_metrics

    def job():
        t0 = time.perf_counter()
        folder = data or locate_open_bandit()
        names = [c.strip() for c in campaigns.split(",") if c.strip()]
        train = [load_open_bandit(folder, train_policy, c) for c in names]
        evaluation = [load_open_bandit(folder, eval_policy, c) for c in names]
        df = bandit_table(train, evaluation, clip=clip)
        formats = {**{c: ".4f" for c in ("IPS", "IPS low", "IPS high", "SNIPS", "SNIPS low", "SNIPS high")},
                   "lift": ".2f", "matched rows": ","}
        print_table(frame_table(df, f"Open Bandit: click rate per impression, ranker trained on {train_policy} logs, "
                                f"estimated on {eval_policy} logs ({time.perf_counter() - t0:.0f}s)", formats), Console())
        out.parent.mkdir(parents=True, exist_ok=True)
        save_metrics(df, out.with_suffix(".csv"))
        plot_policy_values(df, out.with_suffix(".png"))
    _run(job)


if __name__ == "__main__":
    app()
