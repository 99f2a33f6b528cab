from __future__ import annotations

import pytest
from tasklane.config import DEFAULT_TASK_MODULES, Settings
from tasklane.errors import ConfigurationError


def test_defaults():
    s = Settings.from_env({})
    assert s.task_modules == DEFAULT_TASK_MODULES
    assert s.max_payload_bytes == 5 * 1024 * 1024
    assert s.database_url is None
    assert s.lease_seconds == 900 and s.pending_grace_seconds == 60
    assert Settings.from_env({"LEASE_SECONDS": "30"}).lease_seconds == 30


def test_values_are_read_and_trimmed():
    s = Settings.from_env(
        {
            "TASK_MODULES": " a.b , c ,",
            "MAX_PAYLOAD_BYTES": "1024",
            "LAMBDA_QUEUE_URL": " http://q ",
        }
    )
    assert s.task_modules == ("a.b", "c")
    assert s.max_payload_bytes == 1024
    assert s.lambda_queue_url == "http://q"


@pytest.mark.parametrize("value", ["ten", "-1", "0", "1.5"])
def test_bad_numbers_say_which_variable(value):
    with pytest.raises(ConfigurationError, match="MAX_PAYLOAD_BYTES"):
        Settings.from_env({"MAX_PAYLOAD_BYTES": value})


def test_prepared_statements_are_on_unless_turned_off():
    assert Settings.from_env({}).database_prepared_statements is True
    off = Settings.from_env({"DATABASE_PREPARED_STATEMENTS": " False "})
    assert off.database_prepared_statements is False
    with pytest.raises(ConfigurationError, match="DATABASE_PREPARED_STATEMENTS must be true or"):
        Settings.from_env({"DATABASE_PREPARED_STATEMENTS": "yes"})
