"""A part of Celery's own integration suite, in configuration C (an app adopted with
``claim_check(app)``, results in the task table), on every test run: the whole suite in three
configurations is ``make celery-compat`` (compat/), too long for each run.

The part covers each area of the suite: plain tasks and their results, failures, retries,
rejects, eta and expiry, links and errbacks, chains, groups, chords (nested, replaced,
failing), priorities and signals. Each of its tests is one stock Celery passes on SQS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SUBSET = " or ".join(
    [
        "test_class_based_task_retried",
        "test_basic_task",
        "test_ignore_result",
        "test_send_task_without_ignore_result",
        "test_reject_without_requeue_stores_failure",
        "test_pydantic_model_arguments",
        "test_expired",
        "test_eta",
        "test_fail",
        "test_retry_switches_from_kwargs_to_args",
        "test_link_error_using_signature",
        "test_simple_chain",
        "test_complex_chain",
        "test_group_results_in_chain",
        "test_task_replaced_with_chain",
        "test_group_lone",
        "test_nested_group_chord_counting_mixed",
        "test_chord_order",
        "test_parallel_chords",
        "test_nested_chord",
        "test_chain_of_nine_chords",
        "test_error_propagates_to_chord_from_simple",
        "test_chord_header_task_replaced_with_chain",
        "test_priority_chain",
        "test_each_instance_receives",
    ]
)


@pytest.mark.slow
def test_celerys_own_suite_passes_in_configuration_c(tmp_path):
    out = tmp_path / "compat"
    run = subprocess.run(
        [sys.executable, "-m", "compat", "--configs", "C", "-k", SUBSET, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tests = json.loads((out / "results.json").read_text())["tests"]["C"]
    outcomes = {test: seen["outcome"] for test, seen in tests.items()}
    assert len(outcomes) >= 25, outcomes  # the subset ran (a -k matching nothing would pass)
    failed = {t: tests[t]["reason"] for t, o in outcomes.items() if o not in ("passed", "skipped")}
    assert not failed, failed
    assert sum(o == "passed" for o in outcomes.values()) >= 25
