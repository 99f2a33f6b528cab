"""From Python (docs/python.md): submit, follow, bulk-submit. The tests run this file eagerly."""

# --8<-- [start:tour]
import tasklane
from tasklane.examples import wordcount  # @tasklane.task(name="text.wordcount")

wordcount({"text": "a b"})  # a plain call: runs here, nothing stored
handle = wordcount.delay({"text": "a b c"})  # or tasklane.submit("text.wordcount", {...})
handle.id  # the task's UUID, also its Celery id
handle.status()  # read from Postgres now: queued, running, succeeded, ...
result = handle.get(timeout=30)  # the result; raises tasklane.TaskFailed or TimeoutError
later = wordcount.apply_async({"text": "x"}, idempotency_key="order-7", countdown=60)
texts = ["one", "two three"]
handles = tasklane.submit_many([("text.wordcount", {"text": t}) for t in texts])  # one insert
# --8<-- [end:tour]

# --8<-- [start:errors]
try:
    tasklane.submit("no.such.task", {})
except tasklane.UnknownTask as exc:  # every error is a tasklane.TasklaneError
    print(exc)  # no task named 'no.such.task' is registered
# --8<-- [end:errors]
