"""Search algorithms by name (the ``--algo`` choices): hyperopt's own and the joint TPE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from user_errors import UserError


def _atpe() -> Callable[..., Any]:
    try:
        from hyperopt import atpe

        import lightgbm  # noqa: F401 - atpe's model needs it
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"--algo atpe needs extra packages ({exc.name} is missing); "
            "install them with: pip install lightgbm scikit-learn"
        ) from None
    return atpe.suggest


def _load(name: str) -> Callable[..., Any]:
    from hyperopt import anneal, rand, tpe

    from coordinator import joint_tpe

    simple = {"tpe": tpe.suggest, "rand": rand.suggest, "anneal": anneal.suggest, joint_tpe.NAME: joint_tpe.suggest}
    return simple[name] if name in simple else _atpe()


ALGORITHMS = ("joint-tpe", "tpe", "rand", "anneal", "atpe")
"""``joint-tpe`` is :mod:`coordinator.joint_tpe` (Optuna's multivariate, pending-aware TPE on
hyperopt spaces); the others are hyperopt's, ``tpe`` being hyperopt's own TPE."""

DEFAULT_ALGORITHM = "joint-tpe"
"""What a new run uses when neither ``--algo`` nor the experiment names one (see README)."""


def suggest_function(name: str) -> Callable[..., Any]:
    """The ``suggest`` for ``name``.

    Raises:
        UserError: unknown name, or atpe without its optional dependencies.
    """
    if name not in ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)}")
    return _load(name)
