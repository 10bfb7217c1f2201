"""Algorithm cost vs history size: the time of one suggestion by the joint TPE
(``coordinator.joint_tpe``) against hyperopt's ``tpe.suggest`` with 1,000 and 10,000
finished trials, on the space ``bench/coordinator_cost.py`` uses (uniform, loguniform,
choice; ``--space flat``) or a conditional one (``--space nested``: a choice between two
branches with parameters of their own), in the loop ``hpo-coord`` runs: between two suggestions one trial finishes and
the new one is inserted, with 3 trials pending (4 workers).  The database side is the same
for both algorithms (``bench/coordinator_cost.py`` measures it), so this times only the
algorithm's call, on in-memory ``hyperopt.Trials``.

For the joint TPE it also times the first call on a history, which rebuilds the sampler's
state from every trial (what a resumed run, a new coordinator process, pays once), and,
in as many further calls run under cProfile, the share of its time spent in Optuna's
Parzen estimators (building them, sampling candidates, scoring them): the part that grows
with the history and that Optuna's own sampler spends too.

    python bench/algorithm_cost.py              # 1,000 and 10,000 trials
    python bench/algorithm_cost.py --quick      # smoke test: 50 and 200 trials
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from hyperopt import Trials, base, hp, rand, tpe
from optuna.samplers._tpe import parzen_estimator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from bench.stock_side import cost_iteration as ci
from coordinator import joint_tpe

TARGET_RATIO = 2.0
PENDING = 3
NESTED = {
    "x": hp.uniform("x", -5, 5),
    "model": hp.choice("model", [
        {"kind": "a", "lr": hp.loguniform("lr", -7, 0)},
        {"kind": "b", "n": hp.quniform("n", 1, 64, 1), "w": hp.uniform("w", 0, 1)},
    ]),
}
SPACES = {"flat": ci.SPACE, "nested": NESTED}


def loss_of(vals: dict) -> float:
    """A loss for either space's ``misc.vals``."""
    if "kind" in vals:
        return float(ci.loss_of(vals))
    x = vals["x"][0]
    branch = abs(vals["lr"][0] - 0.01) if vals["lr"] else abs(vals["n"][0] - 20) / 64 + vals["w"][0]
    return (x - 1.0) ** 2 + branch


def history(n: int, seed: int = 0, space: str = "flat") -> tuple[Trials, base.Domain]:
    """``n`` finished trials drawn at random from the space, plus PENDING new ones."""
    domain = base.Domain(lambda p: 0.0, SPACES[space])
    trials = Trials()
    rng = np.random.default_rng(seed)
    docs = []
    ids = trials.new_trial_ids(n + PENDING)
    for i, tid in enumerate(ids):
        (doc,) = rand.suggest([tid], domain, trials, int(rng.integers(2**31 - 1)))
        if i < n:
            doc["state"] = base.JOB_STATE_DONE
            doc["result"] = {"status": "ok", "loss": loss_of(doc["misc"]["vals"])}
        docs.append(doc)
    trials.insert_trial_docs(docs)
    trials.refresh()
    return trials, domain


def measure(name: str, level: int, iterations: int, space: str = "flat") -> dict:
    """Median time of one suggestion (and, for the joint TPE, of the first call and the
    share of profiled calls spent in Optuna's Parzen estimators)."""
    trials, domain = history(level, space=space)
    algo = tpe.suggest if name == "tpe" else partial(joint_tpe.suggest)
    pending = [d for d in trials._dynamic_trials if d["state"] == base.JOB_STATE_NEW]
    times = []
    first = None
    profile = cProfile.Profile()
    for i in range(iterations * (1 if name == "tpe" else 2) + 1):
        ids = trials.new_trial_ids(1)
        profiled = i > iterations
        if profiled:
            profile.enable()
        started = time.perf_counter()
        docs = algo(ids, domain, trials, 10_001 + i)
        elapsed = time.perf_counter() - started
        if profiled:
            profile.disable()
        elif i == 0:
            first = elapsed
        else:
            times.append(elapsed)
        trials.insert_trial_docs(docs)
        trials.refresh()
        oldest = pending.pop(0)  # the oldest pending trial finishes; the new one is pending
        oldest["state"] = base.JOB_STATE_DONE
        oldest["result"] = {"status": "ok", "loss": loss_of(oldest["misc"]["vals"])}
        pending.append(trials._dynamic_trials[-1])
        trials.refresh()
    return {"algo": name, "level": level, "first_s": first, "median_s": statistics.median(times),
            "p90_s": sorted(times)[int(0.9 * (len(times) - 1))], "iterations": iterations,
            "estimators": None if name == "tpe" else _estimator_share(pstats.Stats(profile))}


def _estimator_share(stats: pstats.Stats) -> float:
    """Of the profiled ``joint_tpe.suggest`` calls' time, the share inside Optuna's
    ``_ParzenEstimator`` (construction, ``sample``, ``log_pdf``; they do not call each other)."""
    inside = total = 0.0
    for (path, _, function), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if path == parzen_estimator.__file__ and function in ("__init__", "sample", "log_pdf"):
            inside += cumulative
        elif path == joint_tpe.__file__ and function == "suggest":
            total += cumulative
    return inside / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1000,10000", help="finished trials, comma-separated")
    parser.add_argument("--iterations", type=int, default=30, help="timed suggestions per level and algorithm")
    parser.add_argument("--space", choices=tuple(SPACES), default="flat",
                        help="flat: coordinator_cost.py's space; nested: a conditional space")
    parser.add_argument("--quick", action="store_true", help="smoke test: 50 and 200 trials, 5 suggestions")
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT)
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.iterations = "50,200", 5
    levels = [int(x) for x in args.levels.split(",") if x]
    start = c.Start()
    rows = []
    for level in levels:
        results = {}
        for name in ("tpe", joint_tpe.NAME):
            results[name] = measure(name, level, args.iterations, args.space)
            r = results[name]
            print(f"{name} at {level}: first {r['first_s'] * 1000:.1f} ms, median {r['median_s'] * 1000:.1f} ms "
                  f"(load {c.load()})", flush=True)
        base_s = results["tpe"]["median_s"]
        for name, r in results.items():
            ratio = r["median_s"] / base_s
            rows.append([
                name, f"{level:,}", r["iterations"], c.ms(r["median_s"]), c.ms(r["p90_s"]),
                c.mark(f"{ratio:.2f}x", ratio <= TARGET_RATIO) if name != "tpe" else "1x",
                c.ms(r["first_s"]) if name != "tpe" else "",
                f"{r['estimators']:.0%}" if name != "tpe" else "",
            ])
    headers = ["algorithm", "finished trials", "suggestions timed", "per suggestion, median (ms)",
               "p90 (ms)", "vs hyperopt tpe", "first call: state rebuilt from all trials (ms)",
               "in Optuna's Parzen estimators (profiled)"]
    described = ("`bench/coordinator_cost.py`'s (uniform, loguniform, 3-way choice; no conditional parameters)"
                 if args.space == "flat" else "conditional (`--space nested`): uniform x and a choice between "
                 "{loguniform lr} and {quniform n, uniform w}")
    extra = [
        f"- Space: {described}; in-memory `hyperopt.Trials` "
        f"holding the finished trials and {PENDING} pending ones; between suggestions the oldest pending trial "
        "finishes and the new one is inserted, as in `hpo-coord`'s loop with 4 workers. Only the algorithm's "
        "call is timed (the database side is the same for both; see the coordinator cost section).",
        "- `joint-tpe` keeps its sampler state between calls (each finished trial told once, and read once by "
        "its sampler); its first call on a history rebuilds that state from all trials, which a resumed run "
        "pays once. Last column: the share of its time spent in Optuna's Parzen estimators (building them, "
        "sampling and scoring candidates), from as many further suggestions run under cProfile (which slows "
        "Python code more than numpy's, so the share is if anything understated).",
        f"- Target (issue 15): `joint-tpe` per suggestion at most {TARGET_RATIO:g}x hyperopt's `tpe.suggest` at "
        "1,000 and 10,000 finished trials.",
        start.finished(),
    ]
    body = c.section(script="algorithm_cost.py", server=None, start=start, extra=extra,
                     headers=headers, rows=rows)
    title = f"Algorithm cost: joint TPE vs hyperopt TPE per suggestion, {args.space} space"
    c.publish(args.out, title, body, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
