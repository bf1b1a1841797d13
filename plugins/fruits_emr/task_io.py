"""The boundary of every Python task of the fruits_features DAG: what a task receives from XCom and
hands on is a typed record (a frozen dataclass), converted to and from XCom's JSON here and nowhere
else; an error the user can fix fails the task at once, with its message only.

`@task_body` wraps a task's body: each argument annotated with a record type arrives as that record
(built from the upstream task's XCom), a returned record leaves as its XCom form, and the user
errors of USER_ERRORS become an AirflowFailException (no retries: a retry would fail the same way).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from fruits_emr.local_steps import StepRejectedInput
from fruits_emr.s3_objects import RunOutputError
from fruits_emr.settings import ConfigError
from local_spark.s3a import S3ConfigError

Body = TypeVar("Body", bound=Callable[..., Any])
Record = TypeVar("Record")

# errors whose message names the input to fix: a retry would fail the same way
USER_ERRORS = (ConfigError, RunOutputError, S3ConfigError, StepRejectedInput)


@contextmanager
def user_errors_fail_the_task() -> Iterator[None]:
    """A user error fails the task at once (AirflowFailException: no retries), with its message only."""
    try:
        yield
    except USER_ERRORS as exc:
        raise AirflowFailException(str(exc)) from None


def to_xcom(record: Any) -> Any:
    """A record (or a list/dict of them) as JSON-ready values: tuples become lists."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {field.name: to_xcom(getattr(record, field.name)) for field in dataclasses.fields(record)}
    if isinstance(record, list | tuple):
        return [to_xcom(item) for item in record]
    if isinstance(record, dict):
        return {key: to_xcom(value) for key, value in record.items()}
    return record


def from_xcom(kind: type[Record], data: Any) -> Record:
    """The record of type `kind` that to_xcom turned into `data` (nested records and tuples too)."""
    return _build(kind, data)


def _build(kind: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        return _build(options[0], data) if len(options) == 1 else data
    if dataclasses.is_dataclass(kind):
        if isinstance(data, kind):
            return data
        hints = typing.get_type_hints(kind)
        return kind(**{field.name: _build(hints[field.name], data[field.name])
                       for field in dataclasses.fields(kind) if field.name in data})
    if origin is tuple:
        arguments = typing.get_args(kind)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_build(arguments[0], item) for item in data)
        return tuple(_build(argument, item) for argument, item in zip(arguments, data, strict=True))
    if origin is list:
        (item_kind,) = typing.get_args(kind) or (Any,)
        return [_build(item_kind, item) for item in data]
    return data


def _record_type(annotation: Any) -> type | None:
    """The record type of a parameter annotated `Record` or `Record | None`, else None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        records = [option for option in typing.get_args(annotation) if dataclasses.is_dataclass(option)]
        return records[0] if len(records) == 1 else None
    return None


def task_body(body: Body) -> Body:
    """Decorator of a task body (below @task): records in and out, user errors fail the task."""
    hints = typing.get_type_hints(body)
    records = {name: kind for name, hint in hints.items() if name != "return" and (kind := _record_type(hint))}
    signature = inspect.signature(body)

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name, kind in records.items():
            value = bound.arguments.get(name)
            if isinstance(value, Mapping):
                bound.arguments[name] = from_xcom(kind, value)
        with user_errors_fail_the_task():
            return to_xcom(body(*bound.args, **bound.kwargs))

    return run  # type: ignore[return-value]
