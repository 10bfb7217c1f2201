"""NAS-Bench-201 on CIFAR-100 as a table lookup: a search-quality benchmark objective.

The NAS-Bench-201 (NATS-Bench topology) cell has four nodes and six edges; each edge is
one of five operations, so the space has 5**6 = 15,625 architectures, all trained and
tabulated.  Evaluating a point is a dictionary lookup, which makes the objective a
cheap and honest way to compare search algorithms: ``loss = 100 - CIFAR-100 test
accuracy`` (percent).  Known figures: the optimum is 73.51; random search's expected
best after 100 evaluations is about 71.6.

The table is a CSV with columns ``arch`` (NAS-Bench-201's cell string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) and ``cifar100_test_acc``.  It is not part of
this project; say where it is with::

    hpo-coord start --exp nasbench201 --set table=/path/to/nasbench201_cifar100.csv

or ``HPO_NASBENCH_TABLE=/path/to/...`` in the worker's environment.  Each process
reads a table (and column) once and keeps it.  ``--set column=NAME`` takes the accuracy
from another column of the table (default ``cifar100_test_acc``; the shared table also has
``cifar10_test_acc``).

Setting ``simulated_seconds`` (default 0) makes each evaluation sleep for that long on
average (uniformly between half and one and a half times it), to imitate training time
when benchmarking parallel workers.
"""

from __future__ import annotations

import csv
import os
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperopt import hp

from objectives.base import Experiment, Reporter, Setting

OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The five candidate operations of an edge, in NAS-Bench-201's order."""

EDGES = ("edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2")
"""``edge_J_I``: the operation from node I into node J."""

TABLE_ENV = "HPO_NASBENCH_TABLE"
TABLE_SETTING = "table"
COLUMN_SETTING = "column"
ACCURACY_COLUMN = "cifar100_test_acc"
"""The default accuracy column."""


class NasBenchTableError(RuntimeError):
    """The NAS-Bench-201 table is not configured, missing, or not in the expected format."""


_tables: dict[tuple[str, str], dict[str, float]] = {}
_lock = threading.Lock()


def arch_string(params: Mapping[str, str]) -> str:
    """The NAS-Bench-201 cell string for ``{edge_J_I: operation}``."""
    try:
        ops = [params[edge] for edge in EDGES]
    except KeyError as exc:
        raise ValueError(f"missing edge {exc.args[0]!r}; expected the edges {', '.join(EDGES)}") from None
    for edge, op in zip(EDGES, ops, strict=True):
        if op not in OPERATIONS:
            raise ValueError(f"{edge}={op!r} is not one of {', '.join(OPERATIONS)}")
    e10, e20, e21, e30, e31, e32 = ops
    return f"|{e10}~0|+|{e20}~0|{e21}~1|+|{e30}~0|{e31}~1|{e32}~2|"


def table_path(settings: Mapping[str, Any] | None = None) -> Path:
    """Where the table is: the ``table`` run setting, else ``$HPO_NASBENCH_TABLE``.

    Raises:
        NasBenchTableError: neither is set.
    """
    value = (settings or {}).get(TABLE_SETTING) or os.environ.get(TABLE_ENV)
    if not value:
        raise NasBenchTableError(
            "the nasbench201 experiment needs the NAS-Bench-201 CIFAR-100 table "
            "(nasbench201_cifar100.csv); give its path with "
            f"`hpo-coord start --exp nasbench201 --set {TABLE_SETTING}=PATH` or set {TABLE_ENV}=PATH "
            "for the workers"
        )
    return Path(str(value)).expanduser()


def column_name(settings: Mapping[str, Any] | None = None) -> str:
    """The accuracy column: the ``column`` run setting, else ``cifar100_test_acc``."""
    return str((settings or {}).get(COLUMN_SETTING) or ACCURACY_COLUMN)


def load_table(path: Path | str, column: str = ACCURACY_COLUMN) -> dict[str, float]:
    """``{arch: test accuracy}`` from ``column`` of the CSV at ``path``, read once per process.

    Raises:
        NasBenchTableError: the file is missing, unreadable, not the expected table, or
            has no such column.
    """
    key = (str(Path(path).expanduser().resolve()), column)
    table = _tables.get(key)
    if table is not None:
        return table
    with _lock:
        table = _tables.get(key)
        if table is None:
            table = _read(Path(key[0]), column)
            _tables[key] = table
    return table


def optimum(table: Mapping[str, float]) -> float:
    """The best accuracy in the table."""
    return max(table.values())


def expected_random_best(table: Mapping[str, float], evals: int) -> float:
    """Random search's expected best accuracy after ``evals`` evaluations (exact).

    Random search (hyperopt's ``rand`` on this space) draws each edge uniformly, that is,
    each architecture uniformly with replacement; the best of ``evals`` draws is the i-th
    smallest of N values with probability (i/N)**evals - ((i-1)/N)**evals.
    """
    values = sorted(table.values())
    n = len(values)
    cdf = [(i / n) ** evals for i in range(n + 1)]
    return sum(v * (cdf[i + 1] - cdf[i]) for i, v in enumerate(values))


def _read(path: Path, column: str) -> dict[str, float]:
    try:
        handle = open(path, newline="")  # noqa: SIM115 - closed by the with below; OSError reported here
    except OSError as exc:
        raise NasBenchTableError(
            f"cannot read the NAS-Bench-201 table {path}: {exc.strerror}; give the right path "
            f"with --set {TABLE_SETTING}=PATH or {TABLE_ENV}"
        ) from None
    with handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"arch", column} <= columns:
            raise NasBenchTableError(
                f"{path} is not a NAS-Bench-201 table with the column {column!r}: it needs the columns "
                f"'arch' and {column!r}, it has {sorted(columns)}; choose the accuracy column with "
                f"--set {COLUMN_SETTING}=NAME"
            )
        table: dict[str, float] = {}
        for line, row in enumerate(reader, start=2):
            try:
                table[row["arch"]] = float(row[column])
            except (TypeError, ValueError):
                raise NasBenchTableError(
                    f"{path} line {line}: {column} {row.get(column)!r} is not a number"
                ) from None
    if not table:
        raise NasBenchTableError(f"{path} holds no architectures")
    return table


def accuracy(params: Mapping[str, str], table: Mapping[str, float]) -> float:
    """The CIFAR-100 test accuracy of the cell ``params`` in ``table``."""
    arch = arch_string(params)
    try:
        return table[arch]
    except KeyError:
        raise NasBenchTableError(f"architecture {arch} is not in the table") from None


def _objective(params: Mapping[str, str], reporter: Reporter) -> dict[str, Any]:
    table = load_table(table_path(reporter.settings), column_name(reporter.settings))
    acc = accuracy(params, table)
    simulated = float(reporter.settings.get("simulated_seconds") or 0)
    if simulated > 0:
        time.sleep(simulated * random.uniform(0.5, 1.5))
    return {"status": "ok", "loss": 100.0 - acc, "accuracy": acc, "arch": arch_string(params)}


space = {edge: hp.choice(edge, list(OPERATIONS)) for edge in EDGES}

nasbench201 = Experiment(
    name="nasbench201",
    space=space,
    objective=_objective,
    max_evals=100,
    description=(
        "NAS-Bench-201 CIFAR-100 table lookup: six hp.choice edges, loss = 100 - test accuracy "
        "(optimum 73.51). Needs --set table=PATH (or HPO_NASBENCH_TABLE); --set column=NAME "
        "picks another accuracy column (default cifar100_test_acc)."
    ),
    settings=(
        Setting(TABLE_SETTING, str, help=f"the NAS-Bench-201 CSV table (default: ${TABLE_ENV})"),
        Setting(COLUMN_SETTING, str, help=f"the accuracy column (default {ACCURACY_COLUMN})"),
        Setting("simulated_seconds", float, help="sleep about this long per evaluation (default 0)",
                minimum=0),
    ),
)
