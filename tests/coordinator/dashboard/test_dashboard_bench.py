"""bench/dashboard_open.py --quick works end to end (a smoke test, not a measurement)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_quick_benchmark_appends_a_section(tmp_path: Path, mongo_server_url: str) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nintro\n")
    done = subprocess.run(
        [sys.executable, "bench/dashboard_open.py", "--quick", "--output", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HPO_BENCH_MONGO_URL": mongo_server_url},
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n## Opening a 500-trial run in the dashboard")
    assert f"`python bench/dashboard_open.py --quick --output {report}`" in text
    rows = re.findall(r"^\| (.+?) \| \**([\d.]+)\** \|$", text, re.M)
    assert len(rows) == 12 and all(float(seconds) > 0 for _, seconds in rows)
