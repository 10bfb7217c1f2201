"""Finding the host's GPUs (simulated lists, a stand-in nvidia-smi) and pinning to them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jobstore.gpu_lease import Gpu
from tests.support.gpus import fake_nvidia_smi
from worker.gpus import discover_gpus, parse_nvidia_smi, visible_devices_env


def test_fake_gpus_from_env() -> None:
    four = discover_gpus({"HPO_FAKE_GPUS": "GPU-aaa,GPU-bbb,GPU-ccc,GPU-ddd"})
    assert [g.uuid for g in four] == ["GPU-aaa", "GPU-bbb", "GPU-ccc", "GPU-ddd"]
    assert [g.index for g in four] == [0, 1, 2, 3]
    assert discover_gpus({"HPO_FAKE_GPUS": ""}) == []
    with pytest.raises(ValueError, match="twice"):
        discover_gpus({"HPO_FAKE_GPUS": "GPU-a,GPU-a"})


def test_parse_nvidia_smi() -> None:
    text = (
        "0, GPU-5d3b1a2e-1111-2222-3333-444455556666, NVIDIA H200, 143771\n"
        "1, GPU-77777777-1111-2222-3333-444455556666, NVIDIA A100-SXM4-80GB, [N/A]\n"
    )
    assert parse_nvidia_smi(text) == [
        Gpu(0, "GPU-5d3b1a2e-1111-2222-3333-444455556666", "NVIDIA H200", 143771),
        Gpu(1, "GPU-77777777-1111-2222-3333-444455556666", "NVIDIA A100-SXM4-80GB", None),
    ]


def test_nvidia_smi_is_asked(tmp_path: Path) -> None:
    fake_nvidia_smi(tmp_path, 'echo "0, GPU-abc, NVIDIA H200, 143771"')
    assert discover_gpus({"PATH": str(tmp_path)}) == [Gpu(0, "GPU-abc", "NVIDIA H200", 143771)]


def test_a_host_without_nvidia_smi_has_no_gpu_and_no_warning(tmp_path: Path, caplog) -> None:
    """A CPU host is normal: the lease warns once if GPUs were wanted, discovery does not."""
    with caplog.at_level(logging.INFO, logger="worker.gpus"):
        assert discover_gpus({"PATH": str(tmp_path)}) == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "nvidia-smi not found: no GPU on this host")]


def test_a_failing_nvidia_smi_is_a_warning(tmp_path: Path, caplog) -> None:
    fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed: no driver' >&2; exit 9")
    with caplog.at_level(logging.WARNING, logger="worker.gpus"):
        assert discover_gpus({"PATH": str(tmp_path)}) == []
    assert "exit code 9 (NVIDIA-SMI has failed: no driver)" in caplog.text


def test_visible_devices_env() -> None:
    two = discover_gpus({"HPO_FAKE_GPUS": "GPU-aaa,GPU-bbb"})
    assert visible_devices_env(two) == {"CUDA_VISIBLE_DEVICES": "GPU-aaa,GPU-bbb"}
    assert visible_devices_env(()) == {"CUDA_VISIBLE_DEVICES": ""}


def test_nvidia_smi_output_that_cannot_be_read_is_a_warning(tmp_path: Path, caplog) -> None:
    """Output in another format (a driver's notice, a changed layout) means no usable GPU,
    said in a warning, as when nvidia-smi fails; the worker does not die on it."""
    fake_nvidia_smi(tmp_path, 'echo "WARNING: infoROM is corrupted at gpu 0000:01:00.0"')
    with caplog.at_level(logging.WARNING, logger="worker.gpus"):
        assert discover_gpus({"PATH": str(tmp_path)}) == []
    assert "unexpected nvidia-smi line: 'WARNING: infoROM is corrupted" in caplog.text
