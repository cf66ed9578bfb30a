"""Data frames as JSON, for historical reads: a kernel sends its entity rows, the service
answers columns. Plain pandas, no Feast: both sides import it.

A time is an ISO 8601 string in UTC (a time without a zone is taken as UTC, as Feast takes
it); what is missing (``None``, NaN, NaT, ``pd.NA``) is ``null``; NumPy's scalars and
arrays are Python's numbers and lists.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["column_values", "json_value", "records"]


def _iso(value: datetime) -> str:
    stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).isoformat()


def json_value(value: Any) -> Any:
    """One value as JSON's: see the module."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.ndarray | list | tuple):
        return [json_value(item) for item in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return value


def column_values(column: pd.Series) -> list[Any]:
    """A column's values as JSON's, in order."""
    if isinstance(column.dtype, pd.DatetimeTZDtype) or column.dtype.kind == "M":
        return [None if pd.isna(stamp) else _iso(stamp) for stamp in pd.to_datetime(column, utc=True)]
    return [json_value(value) for value in column.tolist()]


def _name(name: Hashable) -> str:
    return name if isinstance(name, str) else str(name)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as JSON objects, column names as text."""
    columns = {_name(name): column_values(frame.iloc[:, i]) for i, name in enumerate(frame.columns)}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
