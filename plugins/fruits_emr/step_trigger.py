"""The step sensors' trigger, run by the triggerer while a deferred sensor waits (docs/dag.md).

The provider's EmrStepSensorTrigger polls through aiobotocore, whose releases all pin a botocore
older than the one the DAG and the nodes use (1.44): in the triggerer it fails with
ModuleNotFoundError. This subclass keeps everything of it (arguments, serialization, the waiter
`step_wait_for_terminal`, the provider's polling loop and its events) and only makes the waiter's
DescribeStep calls with boto3 in a worker thread, as the SQS watcher does (events._ThreadedSqs):
the triggerer's event loop never blocks on a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger
from airflow.providers.amazon.aws.utils.waiter_with_logging import async_wait
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import TriggerEvent


class _ThreadedWaiter:
    """A botocore waiter whose wait() is awaited: each call runs in a worker thread."""

    def __init__(self, waiter: Any):
        self._waiter = waiter

    async def wait(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self._waiter.wait, **kwargs)


class EmrStepThreadedTrigger(EmrStepSensorTrigger):
    """EmrStepSensorTrigger whose waiter polls with boto3 in a thread instead of aiobotocore.

    Events as the provider's: {"status": "success"} once the step is COMPLETED; {"status": "error",
    "message": ...} when it ends CANCELLED, FAILED or INTERRUPTED, or the attempts run out."""

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.hook()
        # the client is made (credentials, endpoint) in the thread too: it may read files or the network
        waiter = await asyncio.to_thread(hook.get_waiter, self.waiter_name,
                                         config_overrides=self.waiter_config_overrides)
        try:
            await async_wait(_ThreadedWaiter(waiter), self.waiter_delay, self.attempts, self.waiter_args,
                             self.failure_message, self.status_message, self.status_queries)
        except AirflowException as error:
            yield self._event_from_exception(error)
        else:
            yield TriggerEvent({"status": "success", self.return_key: self.return_value})
