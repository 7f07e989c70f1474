"""The SQLite recipe under contention (the measurement behind the SQLite table in docs/store.md).

Four processes run read-then-write transactions on one counter. ilinkbot's recipe must end
exact with no error; the two baselines are run to show what the recipe prevents (SQLAlchemy's
default pysqlite setup silently loses updates, a plain deferred BEGIN fails with "database is
locked").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .measure_sqlite_locking import measure


@pytest.mark.slow
def test_begin_immediate_recipe_is_exact(tmp_path: Path) -> None:
    result = measure("immediate", processes=4, increments=300, directory=tmp_path)
    print(result.line())
    assert result.errors == 0
    assert result.final == result.expected


@pytest.mark.slow
def test_baselines_misbehave(tmp_path: Path) -> None:
    # Timing-dependent by nature: give each baseline a few chances to show its failure mode.
    legacy = deferred = None
    for _ in range(3):
        legacy = measure("legacy", processes=4, increments=300, directory=tmp_path)
        deferred = measure("deferred", processes=4, increments=300, directory=tmp_path)
        print(legacy.line())
        print(deferred.line())
        if legacy.lost > 0 and deferred.errors > 0:
            break
    assert legacy is not None and deferred is not None
    if legacy.lost == 0 or deferred.errors == 0:
        pytest.skip("no contention observed on this machine (processes never overlapped)")
    assert legacy.errors == 0  # the legacy mode fails silently ...
    assert deferred.lost == 0  # ... the deferred mode fails loudly
    assert deferred.first_error is not None and "database is locked" in deferred.first_error
