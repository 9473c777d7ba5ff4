"""Library functions keep keyword defaults for direct use (notebooks, tests), but a run never
relies on them: every stage passes the config's value. Where a keyword mirrors a config key,
its default is held to the schema's here, so the two cannot drift apart."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from emdir import schema_defaults
from emdir.analysis import stats
from emdir.analysis.activations import capture_store
from emdir.analysis.ridge import fit_ridge
from emdir.mechanistic.probe import logistic_cv

# (function, its keyword, the config key whose default it restates)
MIRRORS: list[tuple[Callable[..., Any], str, str]] = [
    *[
        (fn, kw, f"stats.{kw}")
        for fn in (
            stats.bootstrap_mean_ci,
            stats.bootstrap_diff_ci,
            stats.specificity_ci,
            stats.bootstrap_mean_effect,
            stats.QuestionBootstrap.__init__,
        )
        for kw in ("n_boot", "seed", "level")
    ],
    (fit_ridge, "folds", "transfer.cv_folds"),
    (fit_ridge, "widen", "transfer.alpha_widen"),
    (fit_ridge, "seed", "transfer.seed"),
    (logistic_cv, "folds", "mechanistic.rank1.folds"),
    (logistic_cv, "l2", "mechanistic.rank1.l2"),
    (capture_store, "batch_size", "activations.batch_size"),
]


@pytest.mark.parametrize(
    ("fn", "keyword", "key"), MIRRORS, ids=[f"{f.__qualname__}.{k}" for f, k, _ in MIRRORS]
)
def test_keyword_defaults_are_the_schemas(fn: Callable[..., Any], keyword: str, key: str) -> None:
    section, _, name = key.rpartition(".")
    default = inspect.signature(fn).parameters[keyword].default
    assert default == schema_defaults(section)[name], (
        f"{fn.__qualname__}({keyword}={default!r}) differs from config {key} "
        f"({schema_defaults(section)[name]!r}); change one of them"
    )
