"""Finding experiments by name.

Three sources, in this order of precedence:

1. experiments registered at run time with :func:`register` (what
   ``--objective package.module:attribute`` does on both CLIs);
2. the ``hpo_queue.experiments`` entry-point group of installed packages, so a user's
   package adds experiments without editing this project::

       [project.entry-points."hpo_queue.experiments"]
       myexp = "mypackage.experiments:myexp"

3. the built-in experiments below.

Built-ins are imported lazily: a worker that only runs ``quadratic`` never imports torch.
The database only ever names an experiment; what code that name means is decided by the
worker's own installation and command line, never by the database.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from importlib.metadata import entry_points

from objectives.base import Experiment
from user_errors import BadObjectiveReference, UnknownExperiment

ENTRY_POINT_GROUP = "hpo_queue.experiments"

BUILTIN: dict[str, str] = {
    "quadratic": "objectives.tutorial:quadratic",
    "sphere": "objectives.tutorial:sphere",
    "nested": "objectives.tutorial:nested",
    "digits": "objectives.digits:digits",
    "cifar100": "objectives.cifar100:cifar100",
    "nasbench201": "objectives.nasbench201:nasbench201",
}

_registered: dict[str, Experiment] = {}
_loaded: dict[str, Experiment] = {}


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    """The entry-point group, read once per process (scanning installed packages costs
    tens of milliseconds, too much to repeat for every job)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Every experiment name this process can resolve, sorted."""
    return sorted(set(BUILTIN) | set(_entry_points()) | set(_registered))


def load_reference(reference: str) -> Experiment:
    """Import ``package.module:attribute`` and check that it is an :class:`Experiment`.

    Modules are looked up in the installed packages and in the current directory, as
    ``python -m`` would.
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise BadObjectiveReference(
            f"objective reference {reference!r} must look like 'package.module:attribute'"
        )
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadObjectiveReference(
            f"cannot import module {module_name!r} for objective {reference!r}: {exc}"
        ) from exc
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise BadObjectiveReference(
            f"module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if not isinstance(value, Experiment):
        raise BadObjectiveReference(
            f"{reference!r} is a {type(value).__name__}, not an objectives.base.Experiment"
        )
    return value


def register(experiment: Experiment) -> Experiment:
    """Make ``experiment`` resolvable by its name in this process (overrides others)."""
    _registered[experiment.name] = experiment
    return experiment


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``.

    Raises:
        UnknownExperiment: no source knows ``name``; the message lists the known names.
    """
    if name in _registered:
        return _registered[name]
    reference = _entry_points().get(name) or BUILTIN.get(name)
    if reference is None:
        raise UnknownExperiment(
            f"unknown experiment {name!r}; known experiments: {', '.join(known_names())}"
        )
    experiment = _loaded.get(reference) or load_reference(reference)
    _loaded[reference] = experiment
    if experiment.name != name:
        raise BadObjectiveReference(
            f"{reference!r} is registered as {name!r} but its Experiment is named "
            f"{experiment.name!r}"
        )
    return experiment
