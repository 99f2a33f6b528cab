"""Reconciler (scheduled): sends tasks when due and again those left behind; and, on its
own schedule (``{"action": "prune"}``), the retention prune."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from tasklane import reconciler
from tasklane.logs import logger

#: The time kept back from a pass for its last batch (a claim, 500 sends, a commit).
MARGIN_S = 30


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if isinstance(event, dict) and event.get("action") == "prune":
        return {"pruned": reconciler.prune()}
    # what is due is sent until none is left, keeping a margin of the invocation's time
    budget_s = context.get_remaining_time_in_millis() / 1000 - MARGIN_S
    records = reconciler.reconcile(budget_s=max(budget_s, 1.0))
    return {"resent": [str(r.id) for r in records if r.status == "queued"], "found": len(records)}
