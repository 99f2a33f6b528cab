# The celery lane's worker image (ECS Fargate, arm64):
#   docker build --platform linux/arm64 -t tasklane-worker .
# Add your task modules to the image and name them in the stack's TaskModules parameter.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4-openssl-dev libssl-dev gcc \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app worker
WORKDIR /app
COPY pyproject.toml README.md ./
COPY layers/tasklane ./layers/tasklane
RUN pip install . && apt-get purge -y gcc && apt-get autoremove -y
USER worker

# SIGTERM (ECS stop) starts Celery's warm shutdown: running tasks finish within StopTimeout, and
# acks-late messages of tasks that do not are redelivered after their visibility timeout.
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "tasklane.worker", "worker", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
