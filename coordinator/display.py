"""Numbers as people read them, for what ``hpo-coord`` prints (summary, status, best, trials).

hyperopt's ``quniform`` gives floats (``24.0``), and results may hold large integers
(``n_params``); printed as they are they read as ``24.0`` and ``1.835e+04``.  These
helpers change only what is shown (``hpo-coord trials`` and the dashboard's trial table
write their ``params.*`` columns through them too): objectives and the database keep the values as they are.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

EXACT_INTEGERS = 2.0**53
"""Floats below this magnitude hold whole numbers exactly; larger ones stay floats."""


def _whole(value: Any) -> bool:
    """True for an int, or a finite float holding a whole number below :data:`EXACT_INTEGERS`."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, numbers.Real) and float(value).is_integer() and abs(float(value)) < EXACT_INTEGERS


def whole_floats_as_ints(value: Any) -> Any:
    """``value`` with every float holding a whole number as an int (``24.0`` -> ``24``),
    through nested mappings and lists; anything else (bools, NaN, other types) unchanged."""
    if isinstance(value, Mapping):
        return {key: whole_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [whole_floats_as_ints(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and _whole(value):
        return int(value)
    return value


def number_text(value: float, digits: int = 4) -> str:
    """``value`` for a person: a whole number in full (``18350``, not ``1.835e+04``),
    any other to ``digits`` significant digits."""
    return str(int(value)) if _whole(value) else f"{value:.{digits}g}"
