"""Smoke tests: each benchmark script's ``--quick`` mode runs and appends its table.

They check that the scripts work end to end (this project's side: real coordinator,
workers and database), not the figures.  The stock-hyperopt side needs a virtual
environment with ``pymongo<4``; the quick modes skip it and say so.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from objectives import nasbench201 as nb

REPO = Path(__file__).resolve().parents[2]


def run_script(script: str, *args: str, report: Path, timeout: float = 420) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HPO_MONGO_URL"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", "--out", str(report), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


# The longer quick runs are in the slow set (CI runs it); the default run keeps the
# cheaper smoke tests of the other scripts, and the guarantees these scripts measure
# have faster tests of their own (named in each reason).
@pytest.mark.slow(reason="dispatch by real workers is tested by tests/coordinator/test_start.py::"
                  "test_two_workers_find_the_quadratic_minimum_and_no_job_runs_twice")
def test_dispatch_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    output = run_script("dispatch.py", report=report)
    assert "stock side skipped" in output
    text = report.read_text()
    assert text.startswith("# Benchmarks")
    assert "## Dispatch: trials per second and idle gaps (quick smoke run)" in text
    rows = [line for line in text.splitlines() if line.startswith("| hpo-queue |")]
    assert len(rows) == 2  # 1 and 2 workers
    assert all("30/30" in row for row in rows)
    assert "- Command: `python bench/dispatch.py --quick" in text


def test_coordinator_cost_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nsomeone else's section\n")
    run_script("coordinator_cost.py", report=report)
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nsomeone else's section\n")  # appended, not replaced
    assert "## Coordinator cost vs history size (quick smoke run)" in text
    rows = [line for line in text.splitlines() if line.startswith("| hpo-queue |")]
    assert [row.split("|")[2].strip() for row in rows] == ["50", "200"]


def _table(tmp_path: Path) -> Path:
    """A synthetic table in the real one's format (the real one is benchmark data, not test data)."""
    path = tmp_path / "nasbench201_cifar100.csv"
    lines = ["arch,cifar100_test_acc,cifar10_test_acc"]
    for ops in itertools.product(nb.OPERATIONS, repeat=len(nb.EDGES)):
        acc = 30.0 + sum(nb.OPERATIONS.index(op) * (i + 1) for i, op in enumerate(ops)) / 3
        lines.append(f"{nb.arch_string(dict(zip(nb.EDGES, ops, strict=True)))},{acc:.4f},{acc:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow(reason="the script's simulated side runs in test_search_quality_takes_the_accuracy_column; "
                  "real hpo-coord runs are tested by tests/coordinator/test_start.py")
def test_search_quality_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("search_quality.py", "--table", str(_table(tmp_path)), report=report)
    text = report.read_text()
    assert "## Search quality: NAS-Bench-201 `cifar100_test_acc`, 30 evaluations (quick smoke run)" in text
    assert re.search(r"^- Date: .* UTC \(start\)$", text, re.M)
    assert re.search(r"^- Script time: [\d.]+ min \(simulation [\d.]+ min, \d+ processes\); load average at end: ", text, re.M)
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]  # after the header
    algos = [row.split("|")[1].strip() for row in rows]
    assert algos == ["rand", "rand", "tpe", "tpe", "joint-tpe", "joint-tpe", "optuna", "optuna", "joint-tpe"]
    # optimum and random baseline computed from the (synthetic) table, not the real one's constants
    best = max(30.0 + sum(4 * (i + 1) for i in range(6)) / 3, 0)
    assert f"From the table: optimum {best:.2f}; random search's expected best after 30 evaluations" in text
    assert f"runs reaching the optimum {best:.2f}" in text
    assert "hpo-coord, real database" in rows[-1]
    assert "| 1 |" in rows[-1]  # the real run finished and was counted


def test_search_quality_takes_the_accuracy_column(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("search_quality.py", "--table", str(_table(tmp_path)), "--column", "cifar10_test_acc",
               "--algos", "rand,joint-tpe", "--real-seeds", "0", report=report)
    text = report.read_text()
    assert "## Search quality: NAS-Bench-201 `cifar10_test_acc`, 30 evaluations (quick smoke run)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["rand", "rand", "joint-tpe", "joint-tpe"]
    bad = subprocess.run(
        [sys.executable, str(REPO / "bench" / "search_quality.py"), "--quick", "--table", str(_table(tmp_path)),
         "--column", "nope", "--out", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=120,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert bad.returncode == 2 and "'nope'" in bad.stderr


def test_algorithm_cost_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("algorithm_cost.py", report=report)
    text = report.read_text()
    assert "## Algorithm cost: joint TPE vs hyperopt TPE per suggestion, flat space (quick smoke run)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows] == [
        ("tpe", "50"), ("joint-tpe", "50"), ("tpe", "200"), ("joint-tpe", "200")]


def test_search_quality_requires_the_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != nb.TABLE_ENV}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "search_quality.py"), "--quick", "--table", str(tmp_path / "no.csv"),
         "--out", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=120, cwd=REPO, env=env, check=False)
    assert done.returncode == 2
    assert "cannot read the NAS-Bench-201 table" in done.stderr
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_dispatch_write_concern_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("dispatch.py", "--write-concern", report=report)
    text = report.read_text()
    assert "## Dispatch: cost of durable writes (quick smoke run)" in text
    rows = [line for line in text.splitlines() if line.startswith("| embedded |")]
    assert len(rows) == 8  # server sync on/off x client durable/fast: write latency, then dispatch
    command = next(line for line in text.splitlines() if line.startswith("- Command: "))
    assert command.startswith("- Command: `python bench/dispatch.py --quick") and "--write-concern" in command


def test_mask_cost_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("mask_cost.py", report=report)
    text = report.read_text()
    assert "## Masking passwords and logging long messages (quick smoke run)" in text
    assert len([line for line in text.splitlines() if "| 2.0 MB |" in line]) == 5


@pytest.mark.slow(reason="real training: digits learning is tested by tests/objectives/test_digits.py::"
                  "test_short_trial_learns_and_reports_every_epoch, local workers by tests/coordinator/test_local_workers.py")
def test_digits_quality_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("digits_quality.py", report=report)
    text = report.read_text()
    assert "## Digits with real training: 6 evaluations, 2 local workers, 1 seeds (quick smoke run)" in text
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ")][1:]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("tpe", "1/1"), ("joint-tpe", "1/1")]
    assert all(0 < float(r[3].split("±")[0]) <= 100 for r in rows)


@pytest.mark.slow(reason="real training: pruning by real workers is tested by tests/worker/test_worker_pruning.py::"
                  "test_two_workers_prune_a_run_with_asha")
def test_pruning_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("pruning.py", "--pruners", "none,asha", report=report)
    text = report.read_text()
    assert "## Pruning with real training: digits, TPE, 6 evaluations of 3 epochs, 2 local workers, 1 seeds" in text
    rows = {r[1].strip(): r for r in (line.split("|") for line in text.splitlines() if line.startswith("| "))}
    replayed = {"asha on loss, replayed", "asha on val_loss, replayed"}
    assert set(rows) == {"pruner", "none", "asha", "replayed on no pruning's curves"} | replayed
    assert rows["none"][3].strip().startswith("18 ")  # 6 trials x 3 epochs, none pruned
    assert int(rows["asha"][3].split("±")[0]) < 18 and float(rows["asha"][4]) > 0
    # every trial trained its whole budget or was pruned (none of the 6 seeded random points diverges)
    assert float(rows["none"][5]) == 6 and float(rows["asha"][4]) + float(rows["asha"][5]) == 6
    # the best accuracy is the one of the trial hpo-coord best names: a trial that trained its whole budget;
    # its configuration is then trained again on another split
    assert all(0 < float(rows[p][6].split("±")[0]) <= 100 for p in ("none", "asha"))
    assert all(0 < float(rows[p][7].split("±")[0]) <= 100 for p in ("none", "asha"))
    assert "re-validated on 1 other split," in text
    # ASHA replayed on no pruning's 6 curves: each trial trains an epoch at least, some but
    # not all their whole budget
    for name in replayed:
        assert 6 <= float(rows[name][3].split("±")[0]) < 18 and 0 < float(rows[name][4]) < 6
        assert 0 < float(rows[name][5].split("±")[0]) <= 100 and 0 < float(rows[name][6].split("±")[0]) <= 100
    assert "hpo-coord start --exp cifar100" in text


def test_pruned_loss_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("pruned_loss.py", report=report)
    rows = [line.split("|") for line in report.read_text().splitlines() if line.startswith("| ")][1:]
    assert [r[1].strip() for r in rows] == ["last", "fail", "worst"]


def test_pruning_cost_quick(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_script("pruning_cost.py", report=report)
    rows = [line.split("|") for line in report.read_text().splitlines() if line.startswith("| ")][1:]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        ("median", "50"), ("median", "200"), ("asha", "50"), ("asha", "200")]
