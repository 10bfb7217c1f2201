"""Search quality with real training: the joint TPE against hyperopt's TPE on ``digits``.

For each algorithm and seed, one ``hpo-coord start --exp digits --local-workers K
--max-evals N --algo A --seed S`` run (the README's CNN on scikit-learn's 8x8 digits) on
one server; the report gives the mean best validation accuracy with its standard error,
and the mean wall time of a run.  Issue 15's target: ``joint-tpe`` not worse than ``tpe``.

    python bench/digits_quality.py                # 2 algorithms x 5 seeds, 40 evaluations, 4 workers
    python bench/digits_quality.py --quick        # smoke test: 1 seed, 6 evaluations of 1 epoch
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from jobstore import schema as s
from jobstore.schema import State


def one_run(server: c.Server, tmp: Path, algo: str, seed: int, args: argparse.Namespace) -> tuple[float | None, float, str]:
    """(best validation accuracy, wall seconds, a note when the run went wrong)."""
    db_name = f"bench_digits_{uuid.uuid4().hex[:8]}"
    run = f"digits-{algo}-s{seed}"
    command = [sys.executable, "-m", "coordinator", "start", "--exp", "digits", "--mongo",
               server.database_url(db_name), "--run", run, "--max-evals", str(args.evals), "--algo", algo,
               "--seed", str(seed), "--local-workers", str(args.workers), "--log-level", "warning",
               *[arg for setting in args.set for arg in ("--set", setting)]]
    log = tmp / f"{run}.log"
    wall, note = c.run_logged(command, log, tmp, args.timeout)
    with server.client() as client:
        accuracies = [d[s.RESULT].get("val_accuracy")
                      for d in client[db_name][s.JOBS].find({s.EXP_KEY: run, s.STATE: State.DONE})]
    server.drop(db_name)
    accuracies = [a for a in accuracies if isinstance(a, (int, float))]
    return (max(accuracies) if accuracies else None), wall, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default="tpe,joint-tpe", help="comma-separated hpo-coord --algo values")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4, help="hpo-coord --local-workers")
    parser.add_argument("--set", action="append", default=[], help="hpo-coord --set KEY=VALUE (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take")
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the logs and the server here")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 6 evaluations of 1 epoch, 2 workers")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.evals, args.workers, args.set = 1, 6, 2, [*args.set, "epochs=1"]
    algos = [a for a in args.algos.split(",") if a]
    start = c.Start()
    rows = []
    with c.workdir(args.workdir) as tmp, c.bench_server(tmp) as server:
        results = {}
        for algo in algos:
            bests, walls, notes = [], [], []
            for seed in range(args.seeds):
                print(f"hpo-coord start --exp digits --algo {algo} --seed {seed} (load {c.load()})", flush=True)
                best, wall, note = one_run(server, tmp, algo, seed, args)
                walls.append(wall)
                if best is not None:
                    bests.append(best)
                if note:
                    notes.append(f"seed {seed}: {note}")
            results[algo] = bests
            mean, se = c.mean_se(bests)
            rows.append([algo, f"{len(bests)}/{args.seeds}", f"{100 * mean:.2f} ± {100 * se:.2f}",
                         f"{min(bests) * 100:.2f}" if bests else "-", f"{sum(walls) / len(walls):.0f} s",
                         "; ".join(notes) or ""])
        label = server.label
    if "tpe" in results and "joint-tpe" in results and not args.quick:
        ours, theirs = c.mean_se(results["joint-tpe"]), c.mean_se(results["tpe"])
        ok = ours[0] >= theirs[0] - max(ours[1], theirs[1])
        verdict = c.mark(f"joint-tpe {100 * ours[0]:.2f} vs tpe {100 * theirs[0]:.2f}", ok)
        extra = [f"- Target (issue 15): joint-tpe not worse than tpe, within one standard error: {verdict}"]
    else:
        extra = []
    extra.append(start.finished())
    headers = ["algorithm", "runs", "best val. accuracy % (mean ± s.e.)", "worst run's best %", "wall per run", "notes"]
    body = c.section(script="digits_quality.py", server=label, start=start, extra=extra,
                     headers=headers, rows=rows)
    title = (f"Digits with real training: {args.evals} evaluations, {args.workers} local workers, "
             f"{args.seeds} seeds")
    c.publish(args.out, title, body, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
