"""The task registry: what a task may ask for."""

from __future__ import annotations

import pytest
from tasklane import registry
from tasklane.errors import ConfigurationError


@pytest.fixture(autouse=True)
def forget_tasks_registered_here():
    registry.load_configured()  # the configured modules' tasks stay registered
    before = set(registry._tasks)
    yield
    for name in set(registry._tasks) - before:
        del registry._tasks[name]


def test_a_time_limit_past_what_sqs_can_hide_a_message_is_refused_at_import():
    """SQS hides a received message for at most 12 hours: a longer run would be delivered
    again while it runs. The answer is to split the work, and the error says so."""
    with pytest.raises(ConfigurationError, match=r"12 hours.*split the work"):
        registry.task("too.long", lane="celery", time_limit=13 * 3600)
    with pytest.raises(ConfigurationError):
        registry.task("zero", time_limit=0)
    registry.task("longest", lane="celery", time_limit=registry.MAX_TIME_LIMIT_S)(lambda p: p)
    assert registry.find("longest").time_limit == registry.MAX_TIME_LIMIT_S < 12 * 3600
    assert registry.find("no.such.task") is None


def test_the_default_time_limit_is_an_hour():
    registry.task("plain")(lambda p: p)
    assert registry.find("plain").time_limit == 3600
