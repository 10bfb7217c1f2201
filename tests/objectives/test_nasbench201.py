"""The nasbench201 benchmark objective: table lookup, configuration and errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hyperopt import pyll

from objectives import nasbench201 as nb
from objectives.base import NullReporter
from objectives.registry import get_experiment


def write_table(path: Path, rows: dict[str, float] | None = None) -> Path:
    """A table in the NAS-Bench-201 CSV layout: every cell, accuracy from its ops."""
    if rows is None:
        rows = {}
        for ops in itertools.product(nb.OPERATIONS, repeat=len(nb.EDGES)):
            score = sum(nb.OPERATIONS.index(op) for op in ops)
            rows[nb.arch_string(dict(zip(nb.EDGES, ops)))] = 40.0 + score
    lines = ["arch,cifar100_test_acc,cifar10_test_acc"] + [f"{a},{v},{v + 20}" for a, v in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return write_table(tmp_path / "nb201.csv")


def point(op: str = "nor_conv_3x3") -> dict[str, str]:
    return {edge: op for edge in nb.EDGES}


def test_arch_string_follows_nasbench201() -> None:
    params = dict(zip(nb.EDGES, ["avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1",
                                 "skip_connect", "skip_connect"]))
    assert nb.arch_string(params) == (
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    )
    with pytest.raises(ValueError, match="edge_2_1='conv' is not one of"):
        nb.arch_string({**params, "edge_2_1": "conv"})
    with pytest.raises(ValueError, match="missing edge 'edge_3_2'"):
        nb.arch_string({k: v for k, v in params.items() if k != "edge_3_2"})


def test_loss_is_100_minus_accuracy_from_the_setting(table: Path) -> None:
    result = nb.nasbench201.objective(point(), NullReporter({"table": str(table)}))
    expected = 40.0 + 6 * nb.OPERATIONS.index("nor_conv_3x3")
    assert result["status"] == "ok"
    assert result["accuracy"] == pytest.approx(expected)
    assert result["loss"] == pytest.approx(100.0 - expected)
    assert result["arch"] == nb.arch_string(point())


def test_environment_variable_is_the_fallback(table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nb.TABLE_ENV, str(table))
    result = nb.nasbench201.objective(point("none"), NullReporter())
    assert result["accuracy"] == pytest.approx(40.0)


def test_table_is_read_once_per_process(table: Path) -> None:
    first = nb.load_table(table)
    table.write_text("arch,cifar100_test_acc\n")  # a second read would now fail
    assert nb.load_table(table) is first


def test_missing_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(nb.TABLE_ENV, raising=False)
    with pytest.raises(nb.NasBenchTableError, match=r"--set table=PATH.*HPO_NASBENCH_TABLE"):
        nb.nasbench201.objective(point(), NullReporter())


def test_missing_file_and_bad_tables_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(nb.NasBenchTableError, match="cannot read the NAS-Bench-201 table .*nope.csv"):
        nb.load_table(tmp_path / "nope.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,acc\nx,1\n")
    with pytest.raises(nb.NasBenchTableError, match="needs the columns 'arch' and 'cifar100_test_acc'"):
        nb.load_table(wrong)
    partial = write_table(tmp_path / "partial.csv", {nb.arch_string(point("none")): 10.0})
    with pytest.raises(nb.NasBenchTableError, match="is not in the table"):
        nb.nasbench201.objective(point(), NullReporter({"table": str(partial)}))


def test_registered_with_six_choice_edges() -> None:
    experiment = get_experiment("nasbench201")
    assert experiment is nb.nasbench201
    labels = {node.arg["label"].obj for node in pyll.toposort(pyll.as_apply(experiment.space))
              if node.name == "hyperopt_param"}
    assert labels == set(nb.EDGES)
    assert experiment.max_evals == 100
    assert experiment.fingerprint() == nb.nasbench201.fingerprint()


def test_the_column_setting_picks_the_accuracy_column(table: Path) -> None:
    result = nb.nasbench201.objective(point(), NullReporter({"table": str(table), "column": "cifar10_test_acc"}))
    expected = 40.0 + 6 * nb.OPERATIONS.index("nor_conv_3x3") + 20
    assert result["accuracy"] == expected and result["loss"] == 100.0 - expected
    default = nb.nasbench201.objective(point(), NullReporter({"table": str(table)}))
    assert default["accuracy"] == expected - 20
    with pytest.raises(nb.NasBenchTableError, match="'imagenet_acc'.*--set column=NAME"):
        nb.nasbench201.objective(point(), NullReporter({"table": str(table), "column": "imagenet_acc"}))


def test_optimum_and_random_baseline_come_from_the_table(tmp_path: Path) -> None:
    cells = nb.load_table(write_table(tmp_path / "t.csv"))
    assert nb.optimum(cells) == 40.0 + 6 * 4
    assert nb.expected_random_best(cells, 1) == pytest.approx(sum(cells.values()) / len(cells))
    # the expected best of n uniform draws (with replacement), checked by simulation
    values = np.array(list(cells.values()))
    draws = np.random.default_rng(0).choice(values, size=(20_000, 10)).max(axis=1)
    assert nb.expected_random_best(cells, 10) == pytest.approx(draws.mean(), abs=0.05)
    assert nb.expected_random_best(cells, 200_000) == pytest.approx(nb.optimum(cells), abs=1e-3)
