"""Reconciler (scheduled): sends tasks when due and again those left behind; and, on its
own schedule (``{"action": "prune"}``), the retention prune."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from tasklane import service
from tasklane.logs import logger


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if isinstance(event, dict) and event.get("action") == "prune":
        return {"pruned": service.prune()}
    records = service.reconcile()
    return {"resent": [str(r.id) for r in records if r.status == "queued"], "found": len(records)}
