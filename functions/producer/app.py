"""Producer: the HTTP API (submit, batch submit, status, retry)."""

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from tasklane import api, snapstart
from tasklane.logs import logger

snapstart.register()  # with SnapStart: warm up before the snapshot, fresh clients after restore


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return api.handle(event, context)
