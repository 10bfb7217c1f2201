"""bench/cifar_train.py runs end to end in its quick mode and records a section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cifar_train.py"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The benchmark script, imported as a module."""
    spec = importlib.util.spec_from_file_location("cifar_train_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


def test_quick_mode_compares_both_pipelines_and_records_a_section(
    bench: ModuleType, tmp_path: Path
) -> None:
    output = tmp_path / "benchmarks.md"
    bench.main(
        ["--quick", "--epochs", "1", "--workers", "0", "--device", "cpu", "--output", str(output)]
    )
    text = output.read_text()
    assert text.startswith(bench.BENCHMARKS_INTRO)
    assert "## CIFAR-100 training data path: device-resident vs DataLoader" in text
    assert "python bench/cifar_train.py --quick --epochs 1 --workers 0" in text
    assert "| resident |" in text and "| DataLoader |" in text


def test_sections_are_appended_after_the_introduction(bench: ModuleType, tmp_path: Path) -> None:
    output = tmp_path / "docs" / "benchmarks.md"
    bench.append_section(output, "## first\n")
    bench.append_section(output, "## second\n")
    text = output.read_text()
    assert text.count("# Benchmarks") == 1
    assert text.index("## first") < text.index("## second")
