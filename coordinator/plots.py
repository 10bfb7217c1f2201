"""The figures of ``hpo-coord plot`` and ``hpo-coord space``, drawn headless.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, rendered
by Agg): nothing here touches pyplot's global state or needs a display, so it runs in
containers, over SSH and in threads.  Hyperparameters are hyperopt's labels with the
values hyperopt records (``misc.vals``): numbers, and for ``hp.choice`` the option's
index, shown by the option's name when the search space is known.  A label nested
under a choice has a value only in the trials where its branch was taken.

Contracts:

* :func:`plot_run` writes each figure it can draw and says, for each one it cannot,
  why (too few trials, no numeric hyperparameter, no metrics); it never raises for a
  run that is merely small.
* :func:`sample_prior` draws from the same prior as ``hyperopt.pyll.stochastic.sample``
  and ``hyperopt.rand``, vectorised (thousands of points in milliseconds), keeping each
  value's label; inactive nested labels get no value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hyperopt import base, pyll
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from coordinator.monitor import TrialPoint
from jobstore.schema import is_finite_number
from objectives.registry import get_experiment
from user_errors import UnknownExperiment

log = logging.getLogger(__name__)

DPI = 110
MAX_MATRIX_PARAMS = 8
"""The scatterplot matrix shows at most this many numeric hyperparameters."""
MIN_IMPORTANCE_TRIALS = 10
"""Importance is not estimated from fewer ok trials than this."""
IMPORTANCE_SAMPLE = 1000
"""Importance is estimated from at most this many ok trials (a fixed-seed random sample
of them), so the forest's fitting time stops growing with the run."""
LEARNING_CURVE_METRICS = ("val_accuracy", "val_loss")
"""Metrics preferred for learning curves, in order; else the first numeric one."""
_LOG_DISTRIBUTIONS = {"loguniform", "qloguniform", "lognormal", "qlognormal"}
_INTEGER_DISTRIBUTIONS = {"randint", "uniformint"}
MAX_BARS = 24
"""Discrete hyperparameters with at most this many distinct values get one bar each."""
LOG_LOSS_RATIO = 10.0
"""Losses are shown on a log scale when all are positive and span more than this factor."""
_INACTIVE_Y = -0.12
_CMAP = "viridis_r"


class Skipped(Exception):
    """A figure that cannot be drawn for this data; the message says why."""


@dataclass(frozen=True)
class ParamInfo:
    """What the search space says about one hyperopt label."""

    label: str
    distribution: str
    """hyperopt's distribution name (``uniform``, ``loguniform``, ``quniform``, ...);
    ``choice`` for ``hp.choice`` / ``hp.pchoice``."""
    options: tuple[str, ...] = ()
    """For a choice, each option's display name, by index."""

    @property
    def categorical(self) -> bool:
        return self.distribution == "choice"

    @property
    def log(self) -> bool:
        return self.distribution in _LOG_DISTRIBUTIONS

    @property
    def discrete(self) -> bool:
        """Quantised (``hp.q*``) or integer (``hp.randint``) values."""
        return self.distribution.startswith("q") or self.distribution in _INTEGER_DISTRIBUTIONS


def _option_name(node: Any, index: int) -> str:
    if isinstance(node, pyll.Literal):
        return str(node.obj)
    if node.name == "dict":
        literals = [f"{key}={value.obj}" for key, value in node.named_args
                    if isinstance(value, pyll.Literal)]
        keys = [key for key, value in node.named_args if not isinstance(value, pyll.Literal)]
        return ", ".join(literals) if literals else "{" + ", ".join(keys) + "}"
    return f"option {index}"


def describe_space(space: Any) -> dict[str, ParamInfo]:
    """Each label of a hyperopt search space, with its distribution and choice options."""
    infos: dict[str, ParamInfo] = {}
    for node in pyll.dfs(pyll.as_apply(space)):
        if node.name == "hyperopt_param":
            label = str(node.pos_args[0].obj)
            infos.setdefault(label, ParamInfo(label, node.pos_args[1].name))
        elif node.name == "switch" and node.pos_args[0].name == "hyperopt_param":
            label = str(node.pos_args[0].pos_args[0].obj)
            options = tuple(_option_name(option, i) for i, option in enumerate(node.pos_args[1:]))
            infos[label] = ParamInfo(label, "choice", options)
    return infos


def space_infos(experiment: str | None) -> dict[str, ParamInfo]:
    """The labels of a registered experiment's space (see :func:`describe_space`); empty,
    with a warning, when the experiment is not installed here (choices then show as
    option numbers)."""
    if experiment is None:
        return {}
    try:
        return describe_space(get_experiment(experiment).space)
    except UnknownExperiment:
        log.warning("experiment %r is not installed here: hp.choice options are shown as "
                    "numbers (pass --objective to name them)", experiment)
        return {}


def sample_prior(space: Any, n: int, seed: int | None = None) -> dict[str, list[float]]:
    """``n`` points drawn from the space's prior, as ``{label: values}``; a nested
    label has values only for the points where it is active."""
    domain = base.Domain(lambda params: 0.0, space)
    _, vals = pyll.rec_eval(
        domain.s_idxs_vals,
        memo={domain.s_new_ids: list(range(n)), domain.s_rng: np.random.default_rng(seed)},
    )
    return {str(label): [float(v) for v in values] for label, values in vals.items()}


# -- shared drawing helpers ---------------------------------------------------------


def _info(infos: Mapping[str, ParamInfo], label: str) -> ParamInfo:
    return infos.get(label) or ParamInfo(label, "unknown")


def _grid(n: int) -> tuple[int, int]:
    columns = min(n, 4)
    return math.ceil(n / columns), columns


def _log_axis(ax: Axes, which: str) -> None:
    """Log scale on ``which`` axis ("x" or "y"), labelling only the decades."""
    getattr(ax, f"set_{which}scale")("log")
    getattr(ax, f"{which}axis").set_minor_formatter(NullFormatter())


def _log_losses(losses: np.ndarray) -> bool:
    return bool(len(losses)) and losses.min() > 0 and losses.max() / losses.min() > LOG_LOSS_RATIO


def _loss_norm(losses: np.ndarray) -> Normalize:
    if _log_losses(losses):
        return LogNorm(losses.min(), losses.max())
    return Normalize(losses.min(), losses.max())


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    return path


def histogram_figure(values: Mapping[str, Sequence[float]], infos: Mapping[str, ParamInfo],
                     total: int, title: str) -> Figure:
    """One panel per label: a histogram of its values (log-spaced bins for log
    distributions), or for a choice the count of each option.  Panels of labels active
    in fewer than ``total`` points say so."""
    labels = sorted(label for label, v in values.items() if len(v))
    if not labels:
        raise Skipped("no hyperparameter values")
    rows, columns = _grid(len(labels))
    figure = Figure(figsize=(3.6 * columns, 2.9 * rows + 0.6), layout="constrained")
    figure.suptitle(title)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, label in zip(axes, labels):
        info = _info(infos, label)
        data = np.asarray(values[label], dtype=float)
        if info.categorical:
            counts = np.bincount(data.astype(int), minlength=len(info.options))
            names = list(info.options) + [str(i) for i in range(len(info.options), len(counts))]
            ax.bar(range(len(counts)), counts, color="tab:blue")
            ax.set_xticks(range(len(counts)), names, rotation=30, ha="right", fontsize=8)
        elif info.discrete and len(np.unique(data)) <= MAX_BARS:
            levels, counts = np.unique(data, return_counts=True)
            ax.bar([f"{v:g}" for v in levels], counts, color="tab:blue")
            ax.tick_params(axis="x", labelsize=8, labelrotation=30)
        else:
            bins: Any = 30
            if info.log and data.min() > 0:
                bins = np.geomspace(data.min(), data.max() * (1 + 1e-9), 31)
                _log_axis(ax, "x")
            ax.hist(data, bins=bins, color="tab:blue", edgecolor="white", linewidth=0.4)
        ax.set_ylabel("count")
        active = "" if len(data) == total else f" (active in {len(data)} of {total})"
        ax.set_title(f"{label}: {info.distribution}{active}", fontsize=9)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    return figure


# -- run figures --------------------------------------------------------------------


def ok_points(points: Sequence[TrialPoint]) -> list[TrialPoint]:
    """The trials that finished with status ok (those with a loss)."""
    return [p for p in points if p.loss is not None]


@dataclass
class LossSeries:
    """Loss per trial: the ok trials' tids and losses (``pruned_steps``: the step where a
    pruner stopped the trial, its loss then the one it reported there; None for a trial
    that was not pruned) with the best loss so far among the trials that trained their
    whole budget (pruned trials are never the best, as in ``hpo-coord best``; NaN until
    the first such trial), and the tids of the error trials."""

    tids: list[int]
    losses: list[float]
    pruned_steps: list[int | None]
    best_so_far: list[float]
    error_tids: list[int]


def loss_series(points: Sequence[TrialPoint]) -> LossSeries:
    """The data of the loss-per-trial figure.

    Raises:
        Skipped: no trial has finished with status ok.
    """
    ok = ok_points(points)
    if not ok:
        raise Skipped("no trial has finished with status ok yet")
    losses = np.array([p.loss for p in ok], dtype=float)
    full = np.array([p.pruned_step is None for p in ok], dtype=bool)
    best = np.minimum.accumulate(np.where(full, losses, np.inf))
    best[np.isinf(best)] = np.nan  # no trial has trained its whole budget yet
    return LossSeries([p.tid for p in ok], losses.tolist(), [p.pruned_step for p in ok],
                      best.tolist(), [p.tid for p in points if p.state == 3])


def loss_figure(points: Sequence[TrialPoint], run: str) -> Figure:
    """Loss per trial (ok trials; pruned ones as grey crosses, at the loss they reported
    where they stopped) with the best-so-far line; error trials as red marks along the top."""
    series = loss_series(points)
    tids = np.array(series.tids)
    losses = np.array(series.losses, dtype=float)
    pruned = np.array([step is not None for step in series.pruned_steps], dtype=bool)
    figure = Figure(figsize=(9, 5), layout="constrained")
    ax = figure.subplots()
    ax.scatter(tids[~pruned], losses[~pruned], s=14, alpha=0.7, label="trial loss")
    if pruned.any():
        ax.scatter(tids[pruned], losses[pruned], s=18, marker="x", color="tab:gray", alpha=0.8,
                   label=f"pruned ({int(pruned.sum())}): loss where it stopped")
    ax.step(tids, series.best_so_far, where="post", color="tab:red", label="best so far")
    errors = series.error_tids
    if errors:
        top = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(errors, [0.98] * len(errors), "x", color="tab:red", transform=top,
                label=f"error ({len(errors)})")
    if _log_losses(losses):
        _log_axis(ax, "y")
    ax.set_xlabel("trial id (tid)")
    ax.set_ylabel("loss")
    full = losses[~pruned]
    best = f"best {full.min():.6g}" if full.size else "no trial trained its whole budget yet"
    ax.set_title(f"run {run}: loss per trial, {best}")
    ax.legend(loc="best")
    return figure


def _numeric_labels(points: Sequence[TrialPoint], infos: Mapping[str, ParamInfo]) -> list[str]:
    counts: dict[str, int] = {}
    for p in points:
        for label in p.vals:
            counts[label] = counts.get(label, 0) + 1
    numeric = [label for label in counts if not _info(infos, label).categorical]
    numeric.sort(key=lambda label: (-counts[label], label))
    return numeric


def _column(points: Sequence[TrialPoint], label: str) -> np.ndarray:
    return np.array([p.vals.get(label, np.nan) for p in points], dtype=float)


def matrix_labels(points: Sequence[TrialPoint], infos: Mapping[str, ParamInfo]) -> list[str]:
    """The numeric hyperparameters the scatterplot matrix shows: the
    :data:`MAX_MATRIX_PARAMS` most often active among the ok trials.

    Raises:
        Skipped: no ok trial has a numeric hyperparameter.
    """
    ok = ok_points(points)
    labels = _numeric_labels(ok, infos)
    if not ok or not labels:
        raise Skipped("no ok trial with a numeric hyperparameter")
    if len(labels) > MAX_MATRIX_PARAMS:
        log.info("scatter matrix: showing the %d most often active of %d numeric hyperparameters",
                 MAX_MATRIX_PARAMS, len(labels))
    return labels[:MAX_MATRIX_PARAMS]


def top_trials(points: Sequence[TrialPoint], n: int) -> list[int]:
    """The tids of the ``n`` ok trials with the lowest loss, best first (whose learning
    curves are drawn)."""
    return [p.tid for p in sorted(ok_points(points), key=lambda p: float(p.loss or 0.0))[:n]]


def scatter_matrix_figure(points: Sequence[TrialPoint], infos: Mapping[str, ParamInfo],
                          run: str) -> Figure:
    """The scatterplot matrix of numeric hyperparameters, coloured by loss; the
    diagonal shows loss against each hyperparameter (as in hyperopt's tutorial)."""
    ok = ok_points(points)
    labels = matrix_labels(points, infos)
    losses = np.array([p.loss for p in ok], dtype=float)
    norm = _loss_norm(losses)
    n = len(labels)
    # fixed margins: a constrained layout of n x n panels costs seconds to compute
    figure = Figure(figsize=(2.6 * n + 2.0, 2.4 * n + 0.8))
    figure.subplots_adjust(left=0.9 / (2.6 * n + 2.0), right=0.86, bottom=0.6 / (2.4 * n + 0.8),
                           top=1 - 0.5 / (2.4 * n + 0.8), wspace=0.35, hspace=0.3)
    figure.suptitle(f"run {run}: hyperparameters coloured by loss ({len(ok)} ok trials)")
    axes = np.atleast_2d(figure.subplots(n, n, squeeze=False))
    columns = {label: _column(ok, label) for label in labels}
    for i, y_label in enumerate(labels):
        for j, x_label in enumerate(labels):
            ax = axes[i, j]
            x = columns[x_label]
            y = losses if i == j else columns[y_label]
            both = ~(np.isnan(x) | np.isnan(y))
            if not both.any():
                ax.text(0.5, 0.5, "never active\ntogether", ha="center", va="center",
                        transform=ax.transAxes, color="0.5")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.scatter(x[both], y[both], c=losses[both], cmap=_CMAP, norm=norm, s=10)
                if _info(infos, x_label).log:
                    _log_axis(ax, "x")
                if i != j and _info(infos, y_label).log or i == j and _log_losses(losses):
                    _log_axis(ax, "y")
            if i == n - 1:
                ax.set_xlabel(x_label)
            if j == 0 or i == j:
                ax.set_ylabel("loss" if i == j else y_label)
    figure.colorbar(ScalarMappable(norm, _CMAP), ax=axes, label="loss", fraction=0.05, pad=0.03)
    return figure


def parallel_figure(points: Sequence[TrialPoint], infos: Mapping[str, ParamInfo],
                    run: str) -> Figure:
    """Parallel coordinates: one line per ok trial across every hyperparameter (scaled to
    its range; log scale for log distributions) and the loss, coloured by loss, the
    best drawn on top.  A nested hyperparameter that was inactive is drawn at an
    "inactive" mark below its axis."""
    ok = sorted(ok_points(points), key=lambda p: -float(p.loss or 0.0))
    labels = sorted({label for p in ok for label in p.vals})
    if not ok or not labels:
        raise Skipped("no ok trial with hyperparameters")
    axes_names = labels + ["loss"]
    table = np.column_stack([_column(ok, label) for label in labels]
                            + [np.array([p.loss for p in ok], dtype=float)])
    losses = table[:, -1].copy()
    limits = []
    for k, name in enumerate(axes_names):
        column = table[:, k]
        info = _info(infos, name) if name != "loss" else ParamInfo(
            name, "loguniform" if _log_losses(losses) else "uniform")
        if info.log and np.nanmin(column) > 0:
            column = np.log10(column)
            table[:, k] = column
        low, high = float(np.nanmin(column)), float(np.nanmax(column))
        if info.categorical:
            low, high = 0.0, float(max(len(info.options) - 1, high, 1))
        limits.append((low, high, info))
        flat = np.where(np.isnan(column), np.nan, 0.5)
        table[:, k] = (column - low) / (high - low) if high > low else flat
    inactive = np.isnan(table).any(axis=0)
    table[np.isnan(table)] = _INACTIVE_Y
    figure = Figure(figsize=(max(8.0, 1.3 * len(axes_names) + 2), 5.5), layout="constrained")
    ax = figure.subplots()
    xs = np.arange(len(axes_names))
    lines = LineCollection([np.column_stack([xs, row]) for row in table], cmap=_CMAP,
                           linewidths=1.0, alpha=0.8)
    lines.set_array(losses)
    lines.set_norm(_loss_norm(losses))
    ax.add_collection(lines)
    for x, (low, high, info), gaps in zip(xs, limits, inactive):
        ax.axvline(x, color="0.6", linewidth=0.8)
        if gaps:
            ax.annotate("inactive", (x, _INACTIVE_Y), xytext=(3, 0), textcoords="offset points",
                        fontsize=7, color="0.4", va="center")
        if info.categorical:
            marks = [((i - low) / (high - low), name) for i, name in enumerate(info.options)]
        else:
            marks = [(0.0, f"{10 ** low if info.log else low:.3g}"),
                     (1.0, f"{10 ** high if info.log else high:.3g}")]
        for y, text in marks:
            ax.annotate(text, (x, y), xytext=(3, -10 if y == 1.0 else 4), textcoords="offset points",
                        fontsize=7)
    ax.set_xlim(-0.2, len(axes_names) - 0.5)
    ax.set_ylim(_INACTIVE_Y - 0.06, 1.08)
    ax.set_xticks(xs, axes_names, rotation=30, ha="right")
    ax.set_yticks([])
    ax.set_title(f"run {run}: parallel coordinates ({len(ok)} ok trials)")
    figure.colorbar(lines, ax=ax, label="loss")
    return figure


def pick_metric(curves: Mapping[int, Sequence[Mapping[str, Any]]]) -> str | None:
    """The metric to plot: ``val_accuracy``, else ``val_loss``, else the first numeric
    key (other than ``step``) of the first entry that has one."""
    keys = {key for entries in curves.values() for entry in entries for key in entry}
    for preferred in LEARNING_CURVE_METRICS:
        if preferred in keys:
            return preferred
    for entries in curves.values():
        for entry in entries:
            for key, value in entry.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    return key
    return None


@dataclass
class Curve:
    """One trial's learning curve: the metric's value at each step it reported."""

    tid: int
    loss: float | None
    steps: list[float]
    values: list[float]
    pruned_step: int | None
    """The step where a pruner stopped the trial; None if it was not pruned."""


@dataclass
class LearningCurves:
    """The data of the learning-curve figure: one :class:`Curve` per trial, best loss first."""

    metric: str
    series: list[Curve]


def curve_series(curves: Mapping[int, Sequence[Mapping[str, Any]]], losses: Mapping[int, float],
                    pruned: Mapping[int, int]) -> LearningCurves:
    """The curves of ``curves`` (tid -> metrics entries) for the metric :func:`pick_metric`
    chooses, by loss (``losses``: tid -> loss); ``pruned``: tid -> the step where a
    pruner stopped the trial.  A trial that never reported the metric has no curve; an
    entry without a numeric ``step`` (none, or a date, a string, ...) is at its position
    (1, 2, ...).

    Raises:
        Skipped: no trial reported a numeric metric.
    """
    metric = pick_metric(curves)
    if metric is None:
        raise Skipped("the top trials reported no metrics")
    series = []
    for tid in sorted(curves, key=lambda t: losses.get(t, math.inf)):
        entries = [e for e in curves[tid] if isinstance(e.get(metric), (int, float))]
        if entries:
            steps = [e["step"] if is_finite_number(e.get("step")) else i + 1 for i, e in enumerate(entries)]
            series.append(Curve(tid, losses.get(tid), steps,
                                [float(e[metric]) for e in entries], pruned.get(tid)))
    return LearningCurves(metric, series)


def learning_curves_figure(curves: Mapping[int, Sequence[Mapping[str, Any]]],
                           losses: Mapping[int, float], run: str,
                           pruned: Mapping[int, int] | None = None) -> Figure:
    """One line per trial of ``curves`` (see :func:`curve_series`), labelled with the
    trial's loss; trials in ``pruned`` (tid -> the step where a pruner stopped them) are
    dashed and end in a cross."""
    data = curve_series(curves, losses, pruned or {})
    figure = Figure(figsize=(9, 5), layout="constrained")
    ax = figure.subplots()
    for curve in data.series:
        note = "" if curve.pruned_step is None else f", pruned at step {curve.pruned_step}"
        loss = math.nan if curve.loss is None else curve.loss
        line, = ax.plot(curve.steps, curve.values, marker="o", markersize=3,
                        linestyle="-" if curve.pruned_step is None else "--",
                        label=f"trial {curve.tid} (loss {loss:.4g}{note})")
        if curve.pruned_step is not None:
            ax.plot(curve.steps[-1], curve.values[-1], "x", color=line.get_color(), markersize=10)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(data.metric)
    ax.set_title(f"run {run}: {data.metric} of the {len(curves)} best trials")
    ax.legend(fontsize=8)
    return figure


def importances(points: Sequence[TrialPoint]) -> list[tuple[str, float]]:
    """Hyperparameter importance, least important first: impurity importances of a
    random forest (scikit-learn, fixed seed) fitted to the loss of the ok trials (of
    :data:`IMPORTANCE_SAMPLE` of them, drawn with a fixed seed, when there are more);
    inactive nested values are missing values.

    Raises:
        Skipped: fewer than :data:`MIN_IMPORTANCE_TRIALS` ok trials, or fewer than two
            hyperparameters.
    """
    from sklearn.ensemble import RandomForestRegressor

    ok = ok_points(points)
    labels = sorted({label for p in ok for label in p.vals})
    if len(ok) < MIN_IMPORTANCE_TRIALS:
        raise Skipped(f"importance needs at least {MIN_IMPORTANCE_TRIALS} ok trials, "
                      f"the run has {len(ok)}")
    if len(labels) < 2:
        raise Skipped("importance is not meaningful with fewer than two hyperparameters")
    if len(ok) > IMPORTANCE_SAMPLE:
        picked = np.random.default_rng(0).choice(len(ok), IMPORTANCE_SAMPLE, replace=False)
        ok = [ok[k] for k in np.sort(picked)]
    features = np.column_stack([_column(ok, label) for label in labels])
    losses = np.array([p.loss for p in ok], dtype=float)
    forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, random_state=0)
    forest.fit(features, losses)
    order = np.argsort(forest.feature_importances_)
    return [(labels[k], float(forest.feature_importances_[k])) for k in order]


def importance_figure(points: Sequence[TrialPoint], run: str) -> Figure:
    """Hyperparameter importance (see :func:`importances`) as horizontal bars."""
    ranked = importances(points)
    figure = Figure(figsize=(8, max(4.0, 1.0 + 0.4 * len(ranked))), layout="constrained")
    ax = figure.subplots()
    ax.barh([label for label, _ in ranked], [value for _, value in ranked], color="tab:green")
    ax.set_xlabel("importance (random forest, mean decrease in impurity)")
    ok = len(ok_points(points))
    ax.set_title(f"run {run}: hyperparameter importance from {min(ok, IMPORTANCE_SAMPLE)} ok trials"
                 + (f" (a sample of {ok})" if ok > IMPORTANCE_SAMPLE else ""))
    return figure


@dataclass
class PlotOutcome:
    """One figure of :func:`plot_run`: the file written, or why there is none."""

    name: str
    path: Path | None
    skipped: str | None = None


def plot_run(points: Sequence[TrialPoint], curves: Mapping[int, Sequence[Mapping[str, Any]]],
             infos: Mapping[str, ParamInfo], out_dir: Path, run: str) -> list[PlotOutcome]:
    """Write the run's figures into ``out_dir`` (created): ``loss.png``,
    ``scatter_matrix.png``, ``histograms.png``, ``parallel_coordinates.png``,
    ``learning_curves.png`` (``curves``: tid -> metrics of the top trials) and
    ``importance.png``.  Figures that cannot be drawn are reported, not written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, list[float]] = {}
    for p in points:
        for label, value in p.vals.items():
            values.setdefault(label, []).append(value)
    losses = {p.tid: p.loss for p in points if p.loss is not None}
    figures: list[tuple[str, Callable[[], Figure]]] = [
        ("loss.png", lambda: loss_figure(points, run)),
        ("scatter_matrix.png", lambda: scatter_matrix_figure(points, infos, run)),
        ("histograms.png", lambda: histogram_figure(
            values, infos, len(points), f"run {run}: values tried ({len(points)} trials)")),
        ("parallel_coordinates.png", lambda: parallel_figure(points, infos, run)),
        ("learning_curves.png", lambda: learning_curves_figure(
            curves, losses, run, {p.tid: p.pruned_step for p in points if p.pruned_step is not None})),
        ("importance.png", lambda: importance_figure(points, run)),
    ]
    outcomes = []
    for name, draw in figures:
        try:
            figure = draw()
        except Skipped as exc:
            outcomes.append(PlotOutcome(name, None, str(exc)))
            continue
        outcomes.append(PlotOutcome(name, _save(figure, out_dir / name)))
    return outcomes


def plot_prior(samples: Mapping[str, Sequence[float]], infos: Mapping[str, ParamInfo], n: int,
               path: Path, experiment: str) -> Path:
    """Write the histograms of ``n`` prior samples (see :func:`sample_prior`) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = histogram_figure(samples, infos, n, f"experiment {experiment}: {n} samples of the prior")
    return _save(figure, path)
