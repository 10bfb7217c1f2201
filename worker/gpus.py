"""Which GPUs this host has, and pinning a process to the ones it leased.

Discovery asks ``nvidia-smi`` (or reads the simulated list in ``HPO_FAKE_GPUS``); the
leases themselves, shared through MongoDB, are :mod:`jobstore.gpu_lease`'s.  Typical use
by a worker::

    gpus = discover_gpus() if gpus_per_worker else ()     # no discovery on request of none
    lease = GpuLease(db, worker_id, gpus=gpus, count=gpus_per_worker)
    leased = wait_for_gpus(lease, stop=shutdown_event)    # None: asked to stop
    os.environ.update(visible_devices_env(leased))        # before CUDA initializes
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from jobstore.gpu_lease import Gpu

log = logging.getLogger(__name__)

FAKE_GPUS_ENV = "HPO_FAKE_GPUS"
"""Comma-separated simulated GPU UUIDs (tests, dry runs); set but empty means no GPU."""

NVIDIA_SMI_ARGS = (
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader,nounits",
)


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from the output of ``nvidia-smi`` with :data:`NVIDIA_SMI_ARGS`.

    Each line is ``index, uuid, name, memory``; a memory of ``[N/A]`` becomes None.

    Raises:
        ValueError: a line that is not of that form.
    """
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        memory = fields[-1]
        gpus.append(
            Gpu(
                index=int(fields[0]),
                uuid=fields[1],
                name=", ".join(fields[2:-1]),
                memory_mib=int(memory) if memory.isdigit() else None,
            )
        )
    return gpus


def discover_gpus(environ: Mapping[str, str] | None = None) -> list[Gpu]:
    """The GPUs of this host, in nvidia-smi's index order.

    ``HPO_FAKE_GPUS`` (e.g. ``"GPU-aaa,GPU-bbb"``), when set, replaces discovery with
    that simulated list.  Otherwise ``nvidia-smi`` is asked.  A host without it has no
    GPU, the normal case on a CPU machine, logged at info level only (the lease warns
    once when GPUs were asked for); where it fails (no driver, a container started
    without GPU access) or prints what :func:`parse_nvidia_smi` cannot read, the host has
    no usable GPU and a warning says why.
    """
    environ = os.environ if environ is None else environ
    fake = environ.get(FAKE_GPUS_ENV)
    if fake is not None:
        uuids = [part.strip() for part in fake.split(",") if part.strip()]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"{FAKE_GPUS_ENV} lists a GPU twice: {fake!r}")
        return [Gpu(i, uuid, name="simulated", memory_mib=None) for i, uuid in enumerate(uuids)]
    program = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if program is None:
        log.info("nvidia-smi not found: no GPU on this host")
        return []
    try:
        done = subprocess.run(
            [program, *NVIDIA_SMI_ARGS], capture_output=True, text=True, timeout=60, check=True
        )
    except subprocess.CalledProcessError as exc:
        log.warning(
            "nvidia-smi failed with exit code %s (%s): no usable GPU on this host",
            exc.returncode, (exc.stderr or exc.stdout or "").strip(),
        )
        return []
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi could not be run (%s): no usable GPU on this host", exc)
        return []
    try:
        return parse_nvidia_smi(done.stdout)
    except ValueError as exc:
        log.warning("nvidia-smi's output cannot be read (%s): no usable GPU on this host", exc)
        return []


def visible_devices_env(leased: Sequence[Gpu]) -> dict[str, str]:
    """Environment variables that pin a process to the ``leased`` GPUs.

    Apply them with ``os.environ.update(...)`` before anything initializes CUDA (the
    first ``torch.cuda`` call, or creating a CUDA tensor); CUDA reads them once per
    process, so a process cannot move to other GPUs afterwards.  Inside the process the
    leased GPUs are then ``cuda:0`` … ``cuda:N-1``.  An empty ``leased`` hides every GPU.
    """
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpu.uuid for gpu in leased)}
