"""Every AWS Lambda API operation by HTTP method and path, so that a request for one wl does
not implement is answered with an AWS-shaped error naming it (not a bare 404).

Generated from botocore 1.44.8's Lambda service model (method and requestUri of each
operation; path parameters become ``[^/]+``), most specific path first.
"""

from __future__ import annotations

import re

OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("DELETE", r"^/2018-10-31/layers/[^/]+/versions/[^/]+/policy/[^/]+/?$", "RemoveLayerVersionPermission"),
    ("GET", r"^/2018-10-31/layers/[^/]+/versions/[^/]+/policy/?$", "GetLayerVersionPolicy"),
    ("POST", r"^/2018-10-31/layers/[^/]+/versions/[^/]+/policy/?$", "AddLayerVersionPermission"),
    ("DELETE", r"^/2015-03-31/functions/[^/]+/aliases/[^/]+/?$", "DeleteAlias"),
    ("GET", r"^/2015-03-31/functions/[^/]+/aliases/[^/]+/?$", "GetAlias"),
    ("PUT", r"^/2015-03-31/functions/[^/]+/aliases/[^/]+/?$", "UpdateAlias"),
    ("DELETE", r"^/2015-03-31/functions/[^/]+/policy/[^/]+/?$", "RemovePermission"),
    ("DELETE", r"^/2018-10-31/layers/[^/]+/versions/[^/]+/?$", "DeleteLayerVersion"),
    ("GET", r"^/2018-10-31/layers/[^/]+/versions/[^/]+/?$", "GetLayerVersion"),
    ("GET", r"^/2019-09-25/functions/[^/]+/event-invoke-config/list/?$", "ListFunctionEventInvokeConfigs"),
    ("POST", r"^/2014-11-13/functions/[^/]+/invoke-async/?$", "InvokeAsync"),
    ("GET", r"^/2015-03-31/functions/[^/]+/aliases/?$", "ListAliases"),
    ("POST", r"^/2015-03-31/functions/[^/]+/aliases/?$", "CreateAlias"),
    ("PUT", r"^/2015-03-31/functions/[^/]+/code/?$", "UpdateFunctionCode"),
    ("GET", r"^/2015-03-31/functions/[^/]+/configuration/?$", "GetFunctionConfiguration"),
    ("PUT", r"^/2015-03-31/functions/[^/]+/configuration/?$", "UpdateFunctionConfiguration"),
    ("POST", r"^/2015-03-31/functions/[^/]+/invocations/?$", "Invoke"),
    ("GET", r"^/2015-03-31/functions/[^/]+/policy/?$", "GetPolicy"),
    ("POST", r"^/2015-03-31/functions/[^/]+/policy/?$", "AddPermission"),
    ("GET", r"^/2015-03-31/functions/[^/]+/versions/?$", "ListVersionsByFunction"),
    ("POST", r"^/2015-03-31/functions/[^/]+/versions/?$", "PublishVersion"),
    ("DELETE", r"^/2017-10-31/functions/[^/]+/concurrency/?$", "DeleteFunctionConcurrency"),
    ("PUT", r"^/2017-10-31/functions/[^/]+/concurrency/?$", "PutFunctionConcurrency"),
    ("GET", r"^/2018-10-31/layers/[^/]+/versions/?$", "ListLayerVersions"),
    ("POST", r"^/2018-10-31/layers/[^/]+/versions/?$", "PublishLayerVersion"),
    ("DELETE", r"^/2019-09-25/functions/[^/]+/event-invoke-config/?$", "DeleteFunctionEventInvokeConfig"),
    ("GET", r"^/2019-09-25/functions/[^/]+/event-invoke-config/?$", "GetFunctionEventInvokeConfig"),
    ("POST", r"^/2019-09-25/functions/[^/]+/event-invoke-config/?$", "UpdateFunctionEventInvokeConfig"),
    ("PUT", r"^/2019-09-25/functions/[^/]+/event-invoke-config/?$", "PutFunctionEventInvokeConfig"),
    ("GET", r"^/2019-09-30/functions/[^/]+/concurrency/?$", "GetFunctionConcurrency"),
    ("DELETE", r"^/2019-09-30/functions/[^/]+/provisioned-concurrency/?$", "DeleteProvisionedConcurrencyConfig"),
    ("GET", r"^/2019-09-30/functions/[^/]+/provisioned-concurrency/?$", "GetProvisionedConcurrencyConfig"),
    ("GET", r"^/2019-09-30/functions/[^/]+/provisioned-concurrency/?$", "ListProvisionedConcurrencyConfigs"),
    ("PUT", r"^/2019-09-30/functions/[^/]+/provisioned-concurrency/?$", "PutProvisionedConcurrencyConfig"),
    ("GET", r"^/2020-04-22/code-signing-configs/[^/]+/functions/?$", "ListFunctionsByCodeSigningConfig"),
    ("DELETE", r"^/2020-06-30/functions/[^/]+/code-signing-config/?$", "DeleteFunctionCodeSigningConfig"),
    ("GET", r"^/2020-06-30/functions/[^/]+/code-signing-config/?$", "GetFunctionCodeSigningConfig"),
    ("PUT", r"^/2020-06-30/functions/[^/]+/code-signing-config/?$", "PutFunctionCodeSigningConfig"),
    ("GET", r"^/2021-07-20/functions/[^/]+/runtime-management-config/?$", "GetRuntimeManagementConfig"),
    ("PUT", r"^/2021-07-20/functions/[^/]+/runtime-management-config/?$", "PutRuntimeManagementConfig"),
    ("DELETE", r"^/2021-10-31/functions/[^/]+/url/?$", "DeleteFunctionUrlConfig"),
    ("GET", r"^/2021-10-31/functions/[^/]+/url/?$", "GetFunctionUrlConfig"),
    ("POST", r"^/2021-10-31/functions/[^/]+/url/?$", "CreateFunctionUrlConfig"),
    ("PUT", r"^/2021-10-31/functions/[^/]+/url/?$", "UpdateFunctionUrlConfig"),
    ("GET", r"^/2021-10-31/functions/[^/]+/urls/?$", "ListFunctionUrlConfigs"),
    ("POST", r"^/2021-11-15/functions/[^/]+/response-streaming-invocations/?$", "InvokeWithResponseStream"),
    ("GET", r"^/2024-08-31/functions/[^/]+/recursion-config/?$", "GetFunctionRecursionConfig"),
    ("PUT", r"^/2024-08-31/functions/[^/]+/recursion-config/?$", "PutFunctionRecursionConfig"),
    ("GET", r"^/2025-11-30/capacity-providers/[^/]+/function-versions/?$", "ListFunctionVersionsByCapacityProvider"),
    ("GET", r"^/2025-11-30/functions/[^/]+/function-scaling-config/?$", "GetFunctionScalingConfig"),
    ("PUT", r"^/2025-11-30/functions/[^/]+/function-scaling-config/?$", "PutFunctionScalingConfig"),
    ("POST", r"^/2025-12-01/durable-execution-callbacks/[^/]+/fail/?$", "SendDurableExecutionCallbackFailure"),
    ("POST", r"^/2025-12-01/durable-execution-callbacks/[^/]+/heartbeat/?$", "SendDurableExecutionCallbackHeartbeat"),
    ("POST", r"^/2025-12-01/durable-execution-callbacks/[^/]+/succeed/?$", "SendDurableExecutionCallbackSuccess"),
    ("POST", r"^/2025-12-01/durable-executions/[^/]+/checkpoint/?$", "CheckpointDurableExecution"),
    ("GET", r"^/2025-12-01/durable-executions/[^/]+/history/?$", "GetDurableExecutionHistory"),
    ("POST", r"^/2025-12-01/durable-executions/[^/]+/pause/?$", "PauseDurableExecution"),
    ("POST", r"^/2025-12-01/durable-executions/[^/]+/resume/?$", "ResumeDurableExecution"),
    ("GET", r"^/2025-12-01/durable-executions/[^/]+/state/?$", "GetDurableExecutionState"),
    ("POST", r"^/2025-12-01/durable-executions/[^/]+/stop/?$", "StopDurableExecution"),
    ("GET", r"^/2025-12-01/functions/[^/]+/durable-executions/?$", "ListDurableExecutionsByFunction"),
    ("DELETE", r"^/2015-03-31/event-source-mappings/[^/]+/?$", "DeleteEventSourceMapping"),
    ("GET", r"^/2015-03-31/event-source-mappings/[^/]+/?$", "GetEventSourceMapping"),
    ("PUT", r"^/2015-03-31/event-source-mappings/[^/]+/?$", "UpdateEventSourceMapping"),
    ("DELETE", r"^/2015-03-31/functions/[^/]+/?$", "DeleteFunction"),
    ("GET", r"^/2015-03-31/functions/[^/]+/?$", "GetFunction"),
    ("DELETE", r"^/2017-03-31/tags/[^/]+/?$", "UntagResource"),
    ("GET", r"^/2017-03-31/tags/[^/]+/?$", "ListTags"),
    ("POST", r"^/2017-03-31/tags/[^/]+/?$", "TagResource"),
    ("DELETE", r"^/2020-04-22/code-signing-configs/[^/]+/?$", "DeleteCodeSigningConfig"),
    ("GET", r"^/2020-04-22/code-signing-configs/[^/]+/?$", "GetCodeSigningConfig"),
    ("PUT", r"^/2020-04-22/code-signing-configs/[^/]+/?$", "UpdateCodeSigningConfig"),
    ("DELETE", r"^/2025-11-30/capacity-providers/[^/]+/?$", "DeleteCapacityProvider"),
    ("GET", r"^/2025-11-30/capacity-providers/[^/]+/?$", "GetCapacityProvider"),
    ("PUT", r"^/2025-11-30/capacity-providers/[^/]+/?$", "UpdateCapacityProvider"),
    ("DELETE", r"^/2025-12-01/durable-executions/[^/]+/?$", "DeleteDurableExecution"),
    ("GET", r"^/2025-12-01/durable-executions/[^/]+/?$", "GetDurableExecution"),
    ("DELETE", r"^/2026-07-09/resource-policy/[^/]+/?$", "DeleteResourcePolicy"),
    ("GET", r"^/2026-07-09/resource-policy/[^/]+/?$", "GetResourcePolicy"),
    ("PUT", r"^/2026-07-09/resource-policy/[^/]+/?$", "PutResourcePolicy"),
    ("GET", r"^/2015-03-31/event-source-mappings/?$", "ListEventSourceMappings"),
    ("POST", r"^/2015-03-31/event-source-mappings/?$", "CreateEventSourceMapping"),
    ("GET", r"^/2015-03-31/functions/?$", "ListFunctions"),
    ("POST", r"^/2015-03-31/functions/?$", "CreateFunction"),
    ("GET", r"^/2016-08-19/account-settings/?$", "GetAccountSettings"),
    ("GET", r"^/2018-10-31/layers/?$", "GetLayerVersionByArn"),
    ("GET", r"^/2018-10-31/layers/?$", "ListLayers"),
    ("GET", r"^/2020-04-22/code-signing-configs/?$", "ListCodeSigningConfigs"),
    ("POST", r"^/2020-04-22/code-signing-configs/?$", "CreateCodeSigningConfig"),
    ("GET", r"^/2025-11-30/capacity-providers/?$", "ListCapacityProviders"),
    ("POST", r"^/2025-11-30/capacity-providers/?$", "CreateCapacityProvider"),
)
API_PATH = re.compile(r"^/20[0-9]{2}-[0-9]{2}-[0-9]{2}/")
_COMPILED = tuple((method, re.compile(pattern), name) for method, pattern, name in OPERATIONS)


def operation_name(method: str, path: str) -> str | None:
    """The Lambda operation a request is for, or None when it is none of them."""
    for op_method, pattern, name in _COMPILED:
        if op_method == method and pattern.match(path):
            return name
    return None

