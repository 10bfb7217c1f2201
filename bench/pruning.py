"""Pruning with real training: none, median, asha and hyperband on ``digits`` with TPE.

For each seed and pruner, one ``hpo-coord start --exp digits --algo tpe --pruner P
--local-workers K --max-evals N --seed S --set epochs=E`` run on one server.  The report
gives, per pruner, the epochs trained in a run (every reported epoch of every trial,
pruned ones included), the trials that trained their whole budget, the wall time of a
run, and the best validation accuracy (mean ± standard error over seeds).  The best
accuracy is the ``val_accuracy`` (at the last epoch) of the trial ``hpo-coord best``
names (:meth:`jobstore.view.ReadOnlyView.best_trial`: the lowest loss among the trials
that trained their whole budget; pruned trials are never the best).  Issue 18's target:
ASHA trains at most a third of the epochs of no pruning, and its best accuracy is within
one standard error of no pruning's.

That accuracy is also what chose the trial, so it flatters a run that chose among more
trials (the largest of many noisy validation accuracies).  What a user of the run gets
is the best trial's configuration: the report also gives its accuracy re-validated, the
configuration trained again for the same budget on ``--revalidate`` other train /
validation splits (the digits setting ``split_seed`` 1, 2, ...) and averaged.

Seeds run whole (every pruner of a seed before the next seed); with ``--budget-s`` no
new seed starts once that many seconds have passed, and the report says how many ran.

A second table replays ASHA on the learning curves of the runs without pruning (when
``none`` is among the pruners): the same 60 configurations, each stopped where this
project's ASHA rule (:class:`objectives.pruning.Pruner`, the run's settings) would have
stopped it, trials starting in trial-id order on as many virtual workers as the run had,
every epoch taking the same time.  It separates the rule's choice of survivors from TPE
adapting to pruned results, and it gives the best accuracy that many survivors would
have had if drawn at random from the same 60 (the exact expectation): how much of
no pruning's best comes from taking the maximum over more noisy validation accuracies.

    python bench/pruning.py                # 4 pruners x 5 seeds, 60 evaluations of 15 epochs, 2 workers
    python bench/pruning.py --quick        # smoke test: 1 seed, 6 evaluations of 3 epochs
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from jobstore import schema as s
from jobstore.schema import State
from jobstore.view import ReadOnlyView
from objectives.base import NullReporter
from objectives.digits import digits
from objectives.pruning import (
    DEFAULT_MIN_RESOURCE,
    MemoryPopulation,
    Pruner,
    PrunerSettings,
)

PRUNERS = ("none", "median", "asha", "hyperband")


REPLAY_METRICS = ("loss", "val_loss")
"""The digits metrics ASHA is replayed on: the objective's pruning metric (the validation
error, in steps of 1/360) and the validation cross-entropy."""


@dataclass
class Curve:
    """One trial of a run without pruning: its reports by step, and its result."""

    tid: int
    reports: dict[int, dict[str, float]]
    loss: float
    accuracy: float


@dataclass
class RunResult:
    """One run's figures."""

    epochs: int
    pruned: int
    complete: int
    """Trials that trained their whole budget (done, status ok, not pruned)."""
    best_accuracy: float | None
    revalidated: float | None
    """The best trial's configuration re-validated on other splits (mean accuracy)."""
    wall_s: float
    note: str
    curves: list[Curve] = field(repr=False)
    """The trials that trained their whole budget, for the replay (runs without pruning)."""


@dataclass
class Replay:
    """ASHA replayed on one run's curves."""

    epochs: int
    survivors: int
    best_accuracy: float
    random_accuracy: float
    """The expected best accuracy of as many trials drawn at random from the run's."""


def replay_asha(curves: list[Curve], metric: str, budget: int, workers: int, min_resource: int) -> Replay:
    """Which of ``curves`` this project's ASHA (pruning on ``metric``, first rung at
    ``min_resource``, the default reduction factor) lets train ``budget`` steps, when
    trials start in tid order on ``workers`` virtual workers that each train one step per
    time unit (the lowest worker first in a unit)."""
    settings = PrunerSettings("asha", metric, "minimize", max_resource=budget, min_resource=min_resource)
    population = MemoryPopulation()
    waiting = sorted(curves, key=lambda curve: curve.tid)
    running: list[tuple[Curve, Pruner, int] | None] = [None] * workers
    survivors: list[Curve] = []
    epochs = 0
    while waiting or any(running):
        for slot in range(workers):
            if running[slot] is None and waiting:
                curve = waiting.pop(0)
                running[slot] = (curve, Pruner(settings, population.for_trial(curve.tid), "replay", curve.tid), 0)
            if running[slot] is None:
                continue
            curve, pruner, step = running[slot]
            step += 1
            epochs += 1
            if pruner.should_prune(step, curve.reports[step][metric]):
                running[slot] = None
            elif step == budget:
                survivors.append(curve)
                population.complete(curve.tid)
                running[slot] = None
            else:
                running[slot] = (curve, pruner, step)
    best = min(survivors, key=lambda curve: curve.loss)
    return Replay(epochs, len(survivors), best.accuracy,
                  expected_best_of(sorted(curve.accuracy for curve in curves), len(survivors)))


def expected_best_of(values: list[float], k: int) -> float:
    """The expected maximum of ``k`` of the ascending ``values`` drawn without
    replacement: the i-th smallest (1-based) is the maximum of C(i-1, k-1) of the
    C(n, k) draws."""
    n = len(values)
    return sum(value * math.comb(i - 1, k - 1) for i, value in enumerate(values, start=1)) / math.comb(n, k)


def one_run(server: c.Server, tmp: Path, pruner: str, seed: int, args: argparse.Namespace) -> RunResult:
    db_name = f"bench_prune_{uuid.uuid4().hex[:8]}"
    run = f"digits-{pruner}-s{seed}"
    command = [sys.executable, "-m", "coordinator", "start", "--exp", "digits", "--mongo",
               server.database_url(db_name), "--run", run, "--max-evals", str(args.evals), "--algo", "tpe",
               "--seed", str(seed), "--local-workers", str(args.workers), "--pruner", pruner,
               "--set", f"epochs={args.epochs}", "--log-level", "warning"]
    if pruner in ("asha", "hyperband") and args.min_resource is not None:  # median reads none
        command += ["--min-resource", str(args.min_resource)]
    if pruner != "none" and args.pruner_metric is not None:
        command += ["--pruner-metric", args.pruner_metric]
    log = tmp / f"{run}.log"
    wall, note = c.run_logged(command, log, tmp, args.timeout)
    with server.client() as client:
        jobs = list(client[db_name][s.JOBS].find({s.EXP_KEY: run}, {s.TID: 1, s.METRICS: 1, s.RESULT: 1, s.STATE: 1}))
        best = ReadOnlyView(client[db_name]).best_trial(run)
    server.drop(db_name)
    epochs = sum(len(job.get(s.METRICS) or []) for job in jobs)
    results = [job.get(s.RESULT) or {} for job in jobs if job.get(s.STATE) == State.DONE]
    pruned = sum(1 for result in results if result.get(s.RESULT_PRUNED))
    complete = sum(1 for result in results if result.get("status") == "ok" and not result.get(s.RESULT_PRUNED))
    accuracy = None if best is None else best[s.RESULT].get("val_accuracy")
    revalidated = None if best is None or not args.revalidate else revalidate(best[s.PARAMS], args)
    curves = [Curve(job[s.TID], {report["step"]: report for report in job[s.METRICS]}, job[s.RESULT]["loss"],
                    job[s.RESULT]["val_accuracy"])
              for job in jobs if pruner == "none" and job.get(s.STATE) == State.DONE
              and (job.get(s.RESULT) or {}).get("status") == "ok" and len(job.get(s.METRICS) or []) == args.epochs]
    return RunResult(epochs, pruned, complete, accuracy, revalidated, wall, note, curves)


def revalidate(params: dict, args: argparse.Namespace) -> float:
    """The mean validation accuracy of ``params`` trained ``args.epochs`` epochs on the
    digits splits ``split_seed`` 1 to ``args.revalidate`` (the runs use split 0)."""
    accuracies = []
    for split_seed in range(1, args.revalidate + 1):
        result = digits.objective(params, NullReporter({"epochs": args.epochs, "split_seed": split_seed}))
        accuracies.append(result["val_accuracy"])
    return sum(accuracies) / len(accuracies)


def replay_table(runs: list[RunResult], args: argparse.Namespace) -> str:
    """The replay of ASHA on the runs without pruning (see the module doc), one row a metric."""
    min_resource = args.min_resource if args.min_resource is not None else DEFAULT_MIN_RESOURCE
    rows = []
    for metric in REPLAY_METRICS:
        replays = [replay_asha(r.curves, metric, args.epochs, args.workers, min_resource) for r in runs if r.curves]
        epochs = c.mean_se([r.epochs for r in replays])
        rows.append([f"asha on {metric}, replayed", f"{len(replays)}", f"{epochs[0]:.0f} ± {epochs[1]:.0f}",
                     f"{sum(r.survivors for r in replays) / len(replays):.1f}",
                     percent([r.best_accuracy for r in replays]), percent([r.random_accuracy for r in replays])])
    return c.table(["replayed on no pruning's curves", "runs", "epochs trained per run (mean ± s.e.)",
                    "trials that trained the whole budget, per run", "best val. accuracy % (mean ± s.e.)",
                    "as many trials at random: expected best % (mean ± s.e.)"], rows)


def percent(values: list[float | None]) -> str:
    """``mean ± s.e.`` of the fractions given, in percent ("-" when none is given)."""
    given = [value for value in values if value is not None]
    if not given:
        return "-"
    mean, se = c.mean_se(given)
    return f"{100 * mean:.2f} ± {100 * se:.2f}"


def verdict(value: str, met: bool) -> str:
    """A target line's value with **MET** or **MISS**."""
    return f"{value} **{'MET' if met else 'MISS'}**"


def cifar100_command(args: argparse.Namespace) -> str:
    """The same comparison's run on ``cifar100`` with one GPU worker (for the report)."""
    return ("hpo-coord start --exp cifar100 --mongo mongodb://HOST/hpo --run cifar100-asha --algo tpe "
            f"--pruner asha --max-evals {args.evals} --set epochs=15 --local-workers 1 --seed 0   "
            "# and --pruner none|median|hyperband for the other rows")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruners", default=",".join(PRUNERS), help="comma-separated hpo-coord --pruner values")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=15, help="each trial's budget (the run setting epochs)")
    parser.add_argument("--workers", type=int, default=2, help="hpo-coord --local-workers")
    parser.add_argument("--min-resource", type=int, default=None,
                        help="hpo-coord --min-resource for the asha and hyperband runs (default: hpo-coord's, 1)")
    parser.add_argument("--pruner-metric", default=None,
                        help="hpo-coord --pruner-metric for the pruned runs (default: the experiment's)")
    parser.add_argument("--revalidate", type=int, default=3, metavar="N",
                        help="re-validate each run's best configuration on N other splits (0: not at all)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new seed after this many seconds")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take")
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the logs and the server here")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 6 evaluations of 3 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.evals, args.epochs, args.workers, args.revalidate = 1, 6, 3, 2, 1
    pruners = [p for p in args.pruners.split(",") if p]
    start = c.Start()
    began = time.monotonic()
    runs: dict[str, list[RunResult]] = {p: [] for p in pruners}
    seeds_run = 0
    with c.workdir(args.workdir) as tmp, c.bench_server(tmp) as server:
        for seed in range(args.seeds):
            if args.budget_s is not None and seed and time.monotonic() - began > args.budget_s:
                break
            for pruner in pruners:
                print(f"seed {seed} pruner {pruner} (load {c.load()})", flush=True)
                result = one_run(server, tmp, pruner, seed, args)
                print(f"  {result}", flush=True)
                runs[pruner].append(result)
            seeds_run += 1
        label = server.label
    rows = []
    for pruner, results in runs.items():
        epochs = c.mean_se([r.epochs for r in results])
        notes = "; ".join(f"seed {seed}: {r.note}" for seed, r in enumerate(results) if r.note)
        rows.append([pruner, f"{len(results)}", f"{epochs[0]:.0f} ± {epochs[1]:.0f}",
                     f"{sum(r.pruned for r in results) / len(results):.1f}",
                     f"{sum(r.complete for r in results) / len(results):.1f}",
                     percent([r.best_accuracy for r in results]), percent([r.revalidated for r in results]),
                     f"{sum(r.wall_s for r in results) / len(results):.0f} s", notes])
    extra = []
    if "none" in runs and "asha" in runs and not args.quick:
        full, asha = c.mean_se([r.epochs for r in runs["none"]]), c.mean_se([r.epochs for r in runs["asha"]])
        extra.append("- Target (issue 18): ASHA trains at most a third of the epochs of no pruning: " + verdict(
            f"{asha[0]:.0f} vs {full[0]:.0f} ({asha[0] / full[0]:.2f}x)", asha[0] <= full[0] / 3))
        acc_none = c.mean_se([r.best_accuracy for r in runs["none"] if r.best_accuracy is not None])
        acc_asha = c.mean_se([r.best_accuracy for r in runs["asha"] if r.best_accuracy is not None])
        extra.append("- Target (issue 18): ASHA's best accuracy within one standard error of no pruning's: " + verdict(
            f"{100 * acc_asha[0]:.2f} vs {100 * acc_none[0]:.2f} ± {100 * acc_none[1]:.2f}",
            acc_asha[0] >= acc_none[0] - acc_none[1]))
        revalidated_none = c.mean_se([r.revalidated for r in runs["none"] if r.revalidated is not None])
        revalidated_asha = c.mean_se([r.revalidated for r in runs["asha"] if r.revalidated is not None])
        if not math.isnan(revalidated_none[0]) and not math.isnan(revalidated_asha[0]):
            extra.append("- The same target read on the best configuration re-validated on other splits: " + verdict(
                f"{100 * revalidated_asha[0]:.2f} vs {100 * revalidated_none[0]:.2f} ± {100 * revalidated_none[1]:.2f}",
                revalidated_asha[0] >= revalidated_none[0] - revalidated_none[1]))
        for what, attribute in (("best accuracy", "best_accuracy"), ("best configuration re-validated", "revalidated")):
            paired = [getattr(a, attribute) - getattr(n, attribute) for n, a in zip(runs["none"], runs["asha"])
                      if getattr(a, attribute) is not None and getattr(n, attribute) is not None]
            if len(paired) > 1:
                diff = c.mean_se(paired)
                extra.append(f"- ASHA less no pruning, {what}, seed by seed (same TPE seed; for reading, not the "
                             f"target): {100 * diff[0]:+.2f} ± {100 * diff[1]:.2f} points over {len(paired)} seeds")
    if seeds_run < args.seeds:
        extra.append(f"- Only {seeds_run} of {args.seeds} seeds ran: --budget-s {args.budget_s:.0f} was reached.")
    extra.append(f"- The same comparison on cifar100 with a GPU: `{cifar100_command(args)}`")
    extra.append(start.finished())
    headers = ["pruner", "runs", "epochs trained per run (mean ± s.e.)", "pruned trials per run",
               "trials that trained the whole budget, per run", "best val. accuracy % (mean ± s.e.)",
               (f"best configuration re-validated on {args.revalidate} other split{'s' if args.revalidate != 1 else ''}, "
               "accuracy % (mean ± s.e.)"),
               "wall per run", "notes"]
    body = c.section(script="pruning.py", server=label, start=start, extra=extra,
                     headers=headers, rows=rows)
    if runs.get("none"):
        body += "\n" + replay_table(runs["none"], args) + "\n"
    title = (f"Pruning with real training: digits, TPE, {args.evals} evaluations of {args.epochs} epochs, "
             f"{args.workers} local workers, {seeds_run} seeds"
             + (f", first rung at step {args.min_resource}" if args.min_resource is not None else "")
             + (f", pruning on {args.pruner_metric}" if args.pruner_metric is not None else ""))
    c.publish(args.out, title, body, quick=args.quick)
    print(f"on cifar100 with a GPU: {cifar100_command(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
