"""How every number in a table or report is written."""

from __future__ import annotations

import math

#: What a missing value shows as.
MISSING = "—"


def fmt(value: float | None, spec: str, missing: str = MISSING) -> str:
    """``value`` formatted with ``spec``; ``missing`` for None or NaN, ``inf`` for infinities."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)
