"""Consumer: the lambda lane's SQS event source; reports partial batch failures."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from tasklane import consumer
from tasklane.logs import logger


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return consumer.handle(event, context)
