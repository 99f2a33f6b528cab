"""Migrator: a CloudFormation custom resource that runs the schema migrations on every deploy."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from tasklane import migrate
from tasklane.logs import logger


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return migrate.handle_custom_resource(event, context)
