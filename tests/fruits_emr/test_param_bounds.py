"""Every Param is bounded (plugins/fruits_emr/params.py, events.param_specs), and a value out of range
gets one message naming the Param and its range: from the trigger form's schema, and from
settings.validate_run_config for what comes through the defaults Variable or the environment."""

from __future__ import annotations

import pytest
from airflow.sdk.definitions.param import ParamsDict

from fruits_emr import events, params, settings
from fruits_emr.settings import ConfigError

DEFAULTS = settings.parse_time_defaults({})


def all_specs() -> dict[str, dict]:
    return {**params.param_specs(DEFAULTS), **events.param_specs(None)}


def bounded(schema: dict) -> bool:
    """A schema that admits only finitely many / finitely long values of every type it allows."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if "enum" in schema:
        return True
    checks = {
        "null": True,
        "boolean": True,
        "integer": "maximum" in schema and ("minimum" in schema or "exclusiveMinimum" in schema),
        "number": "maximum" in schema and ("minimum" in schema or "exclusiveMinimum" in schema),
        "string": "maxLength" in schema,
        "array": "maxItems" in schema and bounded(schema.get("items", {"type": "null"})),
    }
    return all(checks[kind] for kind in types)


def test_every_param_schema_is_bounded():
    specs = all_specs()
    unbounded = sorted(name for name, spec in specs.items() if not bounded(spec))
    assert unbounded == [], f"Params without an upper bound: {unbounded}"
    assert set(specs) == set(settings.CODE_DEFAULTS) | {"event_max_images"}


def form_error(name: str, value) -> str:
    """What the trigger (UI, API, CLI) answers for this value: the Param schema's own validation."""
    from airflow.sdk import Param

    specs = all_specs()
    values = {key: Param(**spec) for key, spec in specs.items()}
    values[name] = Param(**{**specs[name], "default": value})
    with pytest.raises(Exception) as raised:  # noqa: PT011 - Airflow's ParamValidationError
        ParamsDict(values).validate()
    return str(raised.value)


@pytest.mark.parametrize(
    ("name", "value", "variable_message"),
    [
        ("k", 5000, "Param 'k' = 5000 must be 1..2048"),
        ("alpha", 9.0, "Param 'alpha' = 9.0 must be in (0, 1.4]"),
        ("image_size", 4096, "Param 'image_size' = 4096 must be 32..1024 pixels"),
        ("arrow_batch_size", 1_000_000, "Param 'arrow_batch_size' = 1000000 must be 1..1024 rows"),
        ("idle_timeout_minutes", 100_000, "Param 'idle_timeout_minutes' = 100000 must be 1..10080"),
        ("core_instance_count", 500, "Param 'core_instance_count' = 500 is above the cap of 20"),
        ("variance", 1.5, "Param 'variance' = 1.5 must be in (0, 1]"),
        ("raw_prefix", "r" * 600 + "/", "Param 'raw_prefix' is 601 characters long; use at most 512"),
        ("weights", "s3://fruits-data/artifacts/" + "w" * 2000, "Param 'weights' must be 1..1024 characters"),
        ("service_role", "r" * 100, "Param 'service_role' = " + repr("r" * 100) + " is not an IAM role"),
        ("subnet_id", "subnet-" + "0" * 40, "Param 'subnet_id'"),
    ],
)
def test_out_of_range_values_get_one_message_naming_the_param(name, value, variable_message):
    assert name in form_error(name, value)
    # the same value from the defaults Variable (or FRUITS_<NAME>) stops resolve_config with its range
    with pytest.raises(ConfigError) as raised:
        settings.resolve_run_config({}, DEFAULTS, {"bucket": "fruits-data", name: value})
    assert variable_message in str(raised.value)


def test_the_bounds_themselves_are_accepted():
    at_the_bounds = {"k": settings.MAX_PCA_COMPONENTS, "alpha": settings.MAX_ALPHA, "image_size": 1024, "weights": "random",
                     "arrow_batch_size": settings.MAX_ARROW_BATCH_SIZE, "idle_timeout_minutes": 10080,
                     "core_instance_count": 20, "raw_prefix": "r" * 511 + "/", "service_role": "r" * 64}
    config, _ = settings.resolve_run_config({}, DEFAULTS, {"bucket": "fruits-data", **at_the_bounds})
    assert (config.k, config.arrow_batch_size, config.service_role) == (2048, 1024, "r" * 64)


@pytest.mark.parametrize("value", [0, -3, 100_001, "many", True, 12.5, None])
def test_event_max_images_out_of_range_is_one_message(value):
    with pytest.raises(ConfigError, match=r"Param 'event_max_images' = .* must be a whole number 1\.\.100000"):
        events.event_max_images({"event_max_images": value})


def test_event_max_images_in_range():
    assert events.event_max_images({"event_max_images": 500}) == 500
    assert events.event_max_images({"event_max_images": "100000"}) == 100_000
    assert events.event_max_images(None) == events.EventSettings.max_images
