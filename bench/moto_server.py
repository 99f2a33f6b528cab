"""moto's server for the benchmarks, without one O(queue depth) cost per SendMessage.

moto's ``SendMessage`` reads one flag (``ContentBasedDeduplication``) through
``Queue.attributes``, which builds every attribute of the queue, the approximate message counts
among them: three scans of every message in the queue, per message sent. SQS has no such cost,
and on moto it swamps what the benchmarks compare (a batch of 10 costs nearly ten sends once a
queue holds a few dozen messages). This launcher reads the flag from the queue directly, the same
value by the same rule, and changes nothing else. ``python -m bench --stock-moto`` runs on
unmodified moto instead.

Usage: ``python bench/moto_server.py [moto.server options]``.
"""

from __future__ import annotations

import inspect
import sys
import textwrap

SLOW = 'queue.attributes.get("ContentBasedDeduplication") == "true"'
# Queue.attributes lists ContentBasedDeduplication only for FIFO queues, as "true"/"false".
FAST = 'bool(queue.fifo_queue and getattr(queue, "content_based_deduplication", False))'


def patch() -> None:
    from moto.sqs import models

    source = textwrap.dedent(inspect.getsource(models.SQSBackend.send_message))
    if source.count(SLOW) != 1:  # moto changed: fail loudly rather than bench the wrong thing
        raise SystemExit("bench/moto_server.py: moto's SQSBackend.send_message has changed")
    namespace: dict = {}
    exec(compile(source.replace(SLOW, FAST), models.__file__, "exec"), models.__dict__, namespace)
    models.SQSBackend.send_message = namespace["send_message"]


if __name__ == "__main__":
    patch()
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
