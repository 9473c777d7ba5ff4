"""HDF5 helpers shared by the stores (activations, directions, ridge maps): attributes as
plain Python values, and the first non-finite value of a large array."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from emdir.errors import EmdirError

# Activation stores can exceed memory (N x L x d float32), so sums, projections and checks
# read them in blocks of rows; an h5py dataset works wherever an array does.
ROW_BLOCK = 256


def set_attrs(obj: h5py.Group | h5py.Dataset, attrs: Mapping[str, Any]) -> None:
    """Store str / int / float / bool values (or lists of them) as HDF5 attributes."""
    for key, value in attrs.items():
        if isinstance(value, np.ndarray | tuple):
            value = list(value.tolist() if isinstance(value, np.ndarray) else value)
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float | bool | np.generic) for v in items):
            raise EmdirError(
                f"attribute {key!r} = {value!r} cannot be stored in HDF5; "
                "pass a string, number, bool or a list of them (omit it if it is None)"
            )
        obj.attrs[key] = value


def get_attrs(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """HDF5 attributes as plain Python values (the inverse of `set_attrs`)."""
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, np.ndarray):
            value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def first_nonfinite(X: Any) -> tuple[int, int] | None:
    """(row, layer slot) of the first NaN or inf in an [N, L, ...] array or h5py dataset, or
    None when all values are finite; read in blocks of rows."""
    for start in range(0, X.shape[0], ROW_BLOCK):
        finite = np.isfinite(X[start : start + ROW_BLOCK])
        if not finite.all():
            row, slot = np.argwhere(~finite.reshape(*finite.shape[:2], -1).all(axis=-1))[0]
            return start + int(row), int(slot)
    return None
