"""Example tasks, loaded when ``TASK_MODULES`` is unset: one light, one CPU-heavy.

They double as the smallest documentation of how a task is written: a function of one JSON
payload returning a JSON result, with a name and a lane.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

from tasklane import task


@task(name="text.wordcount", lane="lambda")
def wordcount(payload: dict) -> dict:
    """Count words and the most common ones: light work for the Lambda lane."""
    words = payload["text"].split()
    top = Counter(w.lower().strip(".,;:!?\"'()") for w in words).most_common(payload.get("top", 5))
    return {"words": len(words), "top": [[w, n] for w, n in top if w]}


@task(name="text.total", lane="lambda")
def total(payload: list) -> dict:
    """A chord's body: the words its header's ``text.wordcount`` runs counted, summed (a body
    receives the list of its header's results)."""
    return {"words": sum(part["words"] for part in payload), "parts": len(payload)}


@task(name="math.primes", lane="celery")
def primes(payload: dict) -> dict:
    """Count primes below ``limit`` with a sieve: CPU-heavy work for the Celery lane."""
    limit = int(payload["limit"])
    if limit < 2:
        return {"limit": limit, "count": 0, "largest": None}
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    largest = sieve.rfind(1)
    return {"limit": limit, "count": sum(sieve), "largest": largest}


@task(name="data.digest", lane="celery")
def digest(payload: dict) -> dict:
    """SHA-256 of a (possibly multi-megabyte) text, many rounds: a heavy job on a big payload."""
    data = payload["data"].encode()
    h = data
    for _ in range(int(payload.get("rounds", 1))):
        h = hashlib.sha256(h).digest()
    return {"bytes": len(data), "sha256": h.hex()}
