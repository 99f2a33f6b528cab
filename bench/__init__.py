"""tasklane benchmarks: ratios against raw SQS and plain Celery, measured in one run, one machine.

``python -m bench`` runs every measurement and prints a table (``--quick`` for a tiny run).
"""
