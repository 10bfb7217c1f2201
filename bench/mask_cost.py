"""How long masking passwords and logging a long message take (issue 12, defect 4).

``jobstore.connection.mask`` runs on every log record and every printed error; an
objective's exception message can be megabytes long.  Times ``mask`` on 2 MB inputs,
including the worst case known, and one log record of 2 MB through the CLIs' log handler
(``cli_support.console.setup_logging``), and appends a table to docs/benchmarks.md.

    python bench/mask_cost.py
    python bench/mask_cost.py --quick   # smoke test: one run each
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from cli_support import console
from jobstore.connection import mask

SIZE = 2 * 1024 * 1024
INPUTS = {
    "one word (quadratic for the mask before issue 12)": "a" * SIZE,
    "a message with one URL, then a long list": "failed at mongodb://u:pw@h/db: " + repr(list(range(400_000))),
    "log lines with a URL and password each": "File x.py, line 3: mongodb://u:pw@h:1/db?tls=true failed\n" * (SIZE // 58),
    "'://@ ' repeated (worst case known)": "://@ " * (SIZE // 5),
}


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per input; the fastest is reported")
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT, help="report to append to")
    parser.add_argument("--quick", action="store_true", help="smoke test: one run each")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    start = c.Start()
    rows = []
    for name, text in INPUTS.items():
        text = text[:SIZE]
        rows.append([name, f"{len(text) / 1024 / 1024:.1f} MB", "mask()",
                     c.ms(best_of(args.repeat, lambda text=text: mask(text)))])
    console.stderr = console.Console(file=io.StringIO(), width=200)
    console.setup_logging("info")
    message = "trial failed: " + INPUTS["one word (quadratic for the mask before issue 12)"][:SIZE]
    rows.append(["one word", "2.0 MB", "one log record through setup_logging's handler",
                 c.ms(best_of(args.repeat, lambda: logging.getLogger("bench").error("%s", message)))])
    extra = [f"- Fastest of {args.repeat} runs each, in one process; milliseconds.", start.finished()]
    body = c.section(script="mask_cost.py", server=None, start=start, extra=extra,
                     headers=["input", "size", "what", "ms"], rows=rows)
    title = "Masking passwords and logging long messages"
    c.publish(args.out, title, body, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
