"""Reconciler (scheduled): sends again the tasks left pending after a failed or lost send."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from tasklane import service
from tasklane.logs import logger


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    records = service.reconcile()
    return {"resent": [str(r.id) for r in records if r.status == "queued"], "found": len(records)}
