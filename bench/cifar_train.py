"""Benchmark: the device-resident CIFAR-100 data path against a conventional DataLoader.

Both pipelines train the same model (``REFERENCE_PARAMS``, a ResNet-9-like point of
the ``cifar100`` space) with the same ``Trainer``, schedule and seed; only where the
training batches come from differs:

* resident (the GPU fast path; on the CPU when no GPU is used): the data set on the
  device as uint8, batches normalized, padded, cropped and flipped there with batched
  tensor ops (``objectives.cifar100.resident``);
* dataloader: ``torch.utils.data.DataLoader`` over a per-sample dataset that does what
  torchvision's ``CIFAR100.__getitem__`` does (``PIL.Image.fromarray`` then the
  transform) with ``RandomCrop(32, padding=4, padding_mode="reflect")``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, worker processes and pinned
  memory, batches copied to the device.

For each it measures the data path alone (one epoch of batches, no model, after a
warm-up epoch), training throughput, and the training time until the validation
accuracy first reaches ``--target`` (evaluation time excluded), and it appends a dated
section to docs/benchmarks.md.

    python bench/cifar_train.py --quick                  # seconds on a CPU, random data
    python bench/cifar_train.py --data-dir ~/.cache/hpo-queue/data --workers 8
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from objectives.cifar100.dataset import (
    Cifar100,
    Split,
    load_cifar100,
    random_cifar100,
    resolve_data_dir,
    validation_split,
)
from objectives.cifar100.objective import EVAL_BATCH_SIZE
from objectives.cifar100.resident import (
    MEAN,
    PAD,
    STD,
    Batch,
    DeviceSplit,
    ResidentBatches,
    eval_batches,
)
from objectives.cifar100.space import REFERENCE_PARAMS
from objectives.cifar100.training import Trainer

logger = logging.getLogger("bench.cifar_train")

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"
BENCHMARKS_INTRO = """# Benchmarks

Measured results, newest sections last.  Each section names the machine, the software
versions and the exact command, so that it can be rerun and compared.
"""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

QUICK = {"synthetic": 256, "val_size": 64, "epochs": 2, "batch_size": 64, "width_multiplier": 0.25}
"""What ``--quick`` sets (unless given explicitly): a smoke run of the whole benchmark."""


class PilCifar(Dataset[tuple[torch.Tensor, int, int]]):
    """Per-sample access as torchvision's ``CIFAR100`` does it, plus the coarse label."""

    def __init__(self, split: Split, transform: transforms.Compose) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.transform(Image.fromarray(self.split.images[index]))
        return image, int(self.split.fine[index]), int(self.split.coarse[index])


class LoaderBatches:
    """DataLoader batches moved to ``device`` as :class:`Batch` (the baseline path)."""

    def __init__(
        self, split: Split, batch_size: int, *, workers: int, device: torch.device, seed: int
    ):
        transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=PAD, padding_mode="reflect"),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
        self.device = device
        self.loader = DataLoader(
            PilCifar(split, transform),
            batch_size=min(batch_size, len(split)),
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self) -> Iterator[Batch]:
        for images, fine, coarse in self.loader:
            yield Batch(
                images.to(self.device, non_blocking=True),
                fine.to(self.device, non_blocking=True),
                coarse.to(self.device, non_blocking=True),
            )


@dataclass
class PipelineResult:
    name: str
    n_params: int
    data_images_per_s: float
    train_images_per_s: float
    train_time: float
    time_to_target: float | None
    val_accuracy: float
    test_accuracy: float


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_data_path(batches: Iterable[Batch], device: torch.device) -> float:
    """Images per second of producing ``batches`` on ``device`` (nothing else done)."""
    start = time.perf_counter()
    count = 0
    for batch in batches:
        count += len(batch.fine)
    _synchronize(device)
    return count / (time.perf_counter() - start)


def run_pipeline(
    name: str,
    source: ResidentBatches | LoaderBatches,
    params: dict[str, Any],
    args: argparse.Namespace,
    val: DeviceSplit,
    test: DeviceSplit,
    device: torch.device,
) -> PipelineResult:
    for _ in source.epoch():  # warm-up: worker start-up, allocator, first kernels
        pass
    data_rate = time_data_path(source.epoch(), device)
    trainer = Trainer(
        params,
        device=device,
        total_steps=args.epochs * len(source),
        seed=args.seed,
        compile=args.compile,
    )
    rates: list[float] = []
    train_time = 0.0
    time_to_target: float | None = None
    val_accuracy = 0.0
    for _ in range(args.epochs):
        stats = trainer.train_epoch(source.epoch())
        train_time += stats.epoch_time
        rates.append(stats.images_per_s)
        _, val_accuracy = trainer.evaluate(eval_batches(val, EVAL_BATCH_SIZE))
        logger.info(
            "%s epoch %d: loss %.3f, val acc %.4f, %.0f images/s",
            name,
            stats.epoch,
            stats.train_loss,
            val_accuracy,
            stats.images_per_s,
        )
        if time_to_target is None and val_accuracy >= args.target:
            time_to_target = train_time
    _, test_accuracy = trainer.evaluate(eval_batches(test, EVAL_BATCH_SIZE))
    steady = rates[1:] or rates  # the first epoch includes autotuning / compilation
    return PipelineResult(
        name=name,
        n_params=trainer.n_params,
        data_images_per_s=data_rate,
        train_images_per_s=statistics.mean(steady),
        train_time=train_time,
        time_to_target=time_to_target,
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
    )


def _machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} logical CPUs"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def _command(argv: list[str]) -> str:
    """The command line, with the thread-count variables it ran under."""
    env = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    return shlex.join([*env, "python", "bench/cifar_train.py", *argv])


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def render_section(
    args: argparse.Namespace, data_label: str, results: list[PipelineResult], device: torch.device
) -> str:
    """The Markdown section for ``results`` (the resident pipeline first)."""
    resident, baseline = results
    torch_threads = torch.get_num_threads()
    lines = [
        f"## CIFAR-100 training data path: device-resident vs DataLoader "
        f"({datetime.date.today().isoformat()}{', quick' if args.quick else ''})",
        "",
        f"- Command: `{_command(args.argv)}`",
        f"- Machine: {_machine(device)}; trained on `{device}` with {torch_threads} torch "
        f"thread(s)",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__} (built for CUDA {torch.version.cuda or 'none'})",
        f"- Data: {data_label}",
        f"- Model: `REFERENCE_PARAMS` with width multiplier {args.width_multiplier} "
        f"({resident.n_params:,} parameters), batch {args.batch_size}, {args.epochs} epochs, "
        f"compile={args.compile}; DataLoader workers: {args.workers}",
        "",
        "| pipeline | data path alone (images/s) | training (images/s) | train time (s) "
        f"| time to val acc {args.target:.2f} (s) | final val acc | test acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.data_images_per_s:,.0f} | {r.train_images_per_s:,.0f} | "
            f"{r.train_time:.1f} | {_seconds(r.time_to_target)} | {r.val_accuracy:.4f} | "
            f"{r.test_accuracy:.4f} |"
        )
    lines += [
        "",
        "Resident / DataLoader: "
        f"data path {resident.data_images_per_s / baseline.data_images_per_s:.2f}x, "
        f"training {resident.train_images_per_s / baseline.train_images_per_s:.2f}x.",
        "",
    ]
    return "\n".join(lines)


def append_section(path: Path, section: str) -> None:
    """Append ``section`` to ``path``, creating it with a short introduction first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(BENCHMARKS_INTRO)
    with path.open("a") as handle:
        handle.write("\n" + section)


def _dataset(args: argparse.Namespace) -> tuple[Cifar100, str]:
    if args.synthetic:
        n_eval = max(args.val_size, args.synthetic // 8)
        data = random_cifar100(args.synthetic + args.val_size, n_eval, seed=args.seed)
        return data, (
            f"synthetic random images ({args.synthetic} train, {args.val_size} val, "
            f"{n_eval} test; random labels, so accuracies are chance level)"
        )
    root = resolve_data_dir(args.data_dir)
    return load_cifar100(root, download=args.download), f"CIFAR-100 from `{root}`"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    parser.add_argument(
        "--data-dir",
        help="CIFAR-100 data directory (default: $HPO_DATA_DIR or ~/.cache/hpo-queue/data)",
    )
    parser.add_argument("--download", action="store_true", help="download CIFAR-100 when missing")
    parser.add_argument(
        "--synthetic", type=int, help="use N random training images instead of CIFAR-100"
    )
    parser.add_argument("--val-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--width-multiplier", type=float)
    parser.add_argument("--target", type=float, default=0.70, help="validation accuracy to time")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument(
        "--no-record", action="store_true", help="print the section, do not append it"
    )
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    defaults = {
        "synthetic": None,
        "val_size": 5000,
        "epochs": 15,
        "batch_size": int(REFERENCE_PARAMS["batch_size"]),
        "width_multiplier": 1.0,
    }
    if args.quick:
        defaults.update(QUICK)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    device = torch.device(args.device)
    data, data_label = _dataset(args)
    train, val = validation_split(data.train, args.val_size, seed=0)
    params = {
        **REFERENCE_PARAMS,
        "batch_size": args.batch_size,
        "width_multiplier": args.width_multiplier,
    }
    val_device = DeviceSplit.upload(val, device)
    test_device = DeviceSplit.upload(data.test, device)
    sources: dict[str, ResidentBatches | LoaderBatches] = {
        "resident": ResidentBatches(
            DeviceSplit.upload(train, device), args.batch_size, seed=args.seed
        ),
        "DataLoader": LoaderBatches(
            train, args.batch_size, workers=args.workers, device=device, seed=args.seed
        ),
    }
    results = [
        run_pipeline(name, source, params, args, val_device, test_device, device)
        for name, source in sources.items()
    ]
    section = render_section(args, data_label, results, device)
    print(section)
    if not args.no_record:
        append_section(args.output, section)
        logger.info("appended to %s", args.output)


if __name__ == "__main__":
    main()
