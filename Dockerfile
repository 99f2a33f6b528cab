# The celery lane's worker image (ECS Fargate, arm64):
#   docker build --platform linux/arm64 -t tasklane-worker .
# It carries what ships and nothing else: the core library (layers/tasklane/tasklane, without the
# local stack, the CLI or the test helpers, which live in dev/) and the application's own task
# modules (layers/app), as the functions' two layers do. Name them in the stack's TaskModules.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/app/python
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4-openssl-dev libssl-dev gcc \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app worker
WORKDIR /app
COPY layers/tasklane/requirements.txt layers/tasklane/requirements-worker.txt ./core/
COPY layers/app/requirements.txt ./app/
RUN pip install -r core/requirements-worker.txt -r app/requirements.txt \
    && apt-get purge -y gcc && apt-get autoremove -y
COPY layers/tasklane/tasklane ./python/tasklane
COPY layers/app ./python/
RUN rm -f python/Makefile python/requirements.txt && python -m compileall -q python
USER worker

# SIGTERM (ECS stop) starts Celery's warm shutdown: running tasks finish within StopTimeout, and
# acks-late messages of tasks that do not are redelivered after their visibility timeout.
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "tasklane.worker", "worker", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
