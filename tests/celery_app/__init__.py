"""An existing Celery project, as a team would have it, opted in to tasklane with one line."""

import tasklane.celery
from celery import Celery

app = Celery("proj", include=["tests.celery_app.tasks"])
tasklane.celery.claim_check(app)  # the one line
