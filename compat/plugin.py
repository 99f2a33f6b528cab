"""A pytest plugin for Celery's integration suite: configuration C's one line.

Loaded with ``-p compat.plugin`` when ``TASKLANE_COMPAT_CONFIG`` is ``C``. Celery's fixtures
create the suite's app through ``celery.contrib.testing.app.TestApp``; here that app gets
``tasklane.celery.claim_check(app)`` right after it is created, as a Celery team adds it to
their own app. Nothing else of the suite (its tests, tasks, conftest) is touched.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TASKLANE_COMPAT_CONFIG") != "C":
        return
    import celery.contrib.testing.app as testing_app
    import tasklane.celery

    create = testing_app.TestApp

    def claim_checked_app(*args: Any, **kwargs: Any) -> Any:
        return tasklane.celery.claim_check(create(*args, **kwargs))

    testing_app.TestApp = claim_checked_app
