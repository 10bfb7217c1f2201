"""``hpo-coord space`` and the search-space helpers behind it (no database)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import typer
from hyperopt import hp
from matplotlib.image import imread
from rich.console import Console
from typer.testing import CliRunner

from coordinator import monitor_cli, plots
from objectives.tutorial import nested

SPACE = {
    "lr": hp.loguniform("lr", -9, -1),
    "layers": hp.quniform("layers", 1, 4, 1),
    "optimizer": hp.choice("optimizer", [
        {"name": "sgd", "momentum": hp.uniform("momentum", 0.5, 0.99)},
        {"name": "adam"},
    ]),
    "head": hp.choice("head", [None, {"width": hp.quniform("width", 16, 64, 16)}]),
    "activation": hp.choice("activation", ["relu", "gelu"]),
}


def test_describe_space_names_distributions_and_options() -> None:
    infos = plots.describe_space(SPACE)
    assert {label: info.distribution for label, info in infos.items()} == {
        "lr": "loguniform", "layers": "quniform", "optimizer": "choice", "momentum": "uniform",
        "head": "choice", "width": "quniform", "activation": "choice"}
    assert infos["optimizer"].options == ("name=sgd", "name=adam")
    assert infos["head"].options == ("None", "{width}")
    assert infos["activation"].options == ("relu", "gelu")
    assert infos["lr"].log and not infos["momentum"].log
    assert infos["layers"].discrete and infos["optimizer"].categorical


def test_sample_prior_keeps_nested_values_only_when_active() -> None:
    samples = plots.sample_prior(SPACE, 2000, seed=1)
    assert len(samples["lr"]) == len(samples["optimizer"]) == 2000
    sgd = samples["optimizer"].count(0.0)
    assert len(samples["momentum"]) == sgd and 800 < sgd < 1200
    assert len(samples["width"]) == samples["head"].count(1.0)
    assert all(-9 <= math.log(v) <= -1 for v in samples["lr"])
    assert set(samples["layers"]) == {1.0, 2.0, 3.0, 4.0}
    assert plots.sample_prior(SPACE, 50, seed=1)["lr"] == plots.sample_prior(SPACE, 50, seed=1)["lr"]


def test_space_command_plots_the_prior(tmp_path: Path) -> None:
    app = typer.Typer()
    monitor_cli.register(app, Console(width=200, highlight=False))
    result = CliRunner().invoke(app, ["space", "--exp", "nested", "--samples", "600", "--seed", "3",
                                      "--out", str(tmp_path / "prior")])
    assert result.exit_code == 0, result.output
    samples = plots.sample_prior(nested.space, 600, seed=3)
    model = samples["model"]
    counts = ", ".join(f"kind={kind}: {model.count(float(i))}"
                       for i, kind in enumerate(("quadratic", "sine", "constant")))
    assert re.search(rf"model\s*│\s*choice\s*│\s*600/600\s*│\s*{counts}", result.stdout)
    assert re.search(rf"phase\s*│\s*loguniform\s*│\s*{len(samples['phase'])}/600\s*│\s*min 0.0", result.stdout)
    assert len(samples["phase"]) == model.count(1.0)
    png = tmp_path / "prior" / "prior.png"
    assert f"wrote {png}" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    height, width = imread(png).shape[:2]
    assert width >= 800 and height >= 300


def test_space_command_unknown_experiment(tmp_path: Path) -> None:
    app = typer.Typer()
    monitor_cli.register(app, Console(width=200))
    result = CliRunner().invoke(app, ["space", "--exp", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown experiment 'nope'; known experiments:" in result.stderr
    assert not list(tmp_path.iterdir())
