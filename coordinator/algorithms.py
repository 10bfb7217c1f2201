"""hyperopt's search algorithms by name (the ``--algo`` choices)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobstore.errors import UserError


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

    simple = {"tpe": tpe.suggest, "rand": rand.suggest, "anneal": anneal.suggest}
    return simple[name] if name in simple else _atpe()


ALGORITHMS = ("tpe", "rand", "anneal", "atpe")


def suggest_function(name: str) -> Callable[..., Any]:
    """hyperopt's ``suggest`` for ``name``.

    Raises:
        UserError: unknown name, or atpe without its optional dependencies.
    """
    if name not in ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)}")
    return _load(name)
