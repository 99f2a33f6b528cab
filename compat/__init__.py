"""Celery's own integration suite, run on SQS (moto) and Postgres in three configurations.

``python -m compat`` (``make celery-compat``) takes the sdist of the installed Celery from the
package index, and runs its ``t/integration/test_tasks.py`` and ``test_canvas.py``:

- **A**, stock Celery: kombu's SQS transport, Celery's own database result backend;
- **B**, A with tasklane's result backend (``tasklane.results.TaskTableBackend``);
- **C**, B with ``tasklane.celery.claim_check(app)``, the one line a Celery team adds.

It prints the passes per configuration and, for each test A passes that B or C does not, the
reason pytest gave. See ``compat/README.md``.
"""
