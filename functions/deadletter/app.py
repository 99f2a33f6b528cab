"""Dead letters: tasks whose messages reached a lane's DLQ end as failed in Postgres."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from tasklane import deadletter
from tasklane.logs import logger


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return deadletter.handle(event, context)
