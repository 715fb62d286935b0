"""Checks each model class runs on its own config section (the schema leaves `models` open)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.config import ConfigError


def section_key(config: dict[str, Any], where: str | None = None) -> str:
    """'models.<name>' (or 'models.<where>'): how error messages name a model's section."""
    return f"models.{where or config.get('name', config.get('kind'))}"


def require(config: dict[str, Any], keys: Iterable[str], where: str | None = None) -> None:
    """All `keys` present; `where` names a nested section (e.g. 'svm_hog.hog')."""
    missing = [key for key in keys if key not in config]
    if missing:
        raise ConfigError(
            ", ".join(f"{section_key(config, where)}.{key}: missing" for key in missing)
        )


def known(config: dict[str, Any], keys: Iterable[str], where: str | None = None) -> None:
    """No key outside `keys`. The config check knows a model's keys from its conf/model file
    only, so a misspelt optional key there (`schedular: cosine` beside a base's `scheduler`)
    would be logged to MLflow and ignored by training."""
    keys = sorted(keys)
    unknown = sorted(key for key in config if key not in keys)
    if unknown:
        raise ConfigError(
            ", ".join(f"{section_key(config, where)}.{key}: unknown key" for key in unknown)
            + f"; the keys of {section_key(config, where)}: {', '.join(keys)}"
        )


def optional_int(
    config: dict[str, Any], key: str, minimum: int, where: str | None = None
) -> int | None:
    """`key` absent/null, or an integer >= `minimum`."""
    value = config.get(key)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < minimum
    ):
        raise ConfigError(
            f"{section_key(config, where)}.{key}: {value!r} is not null or an integer >= {minimum}"
        )
    return value


def number(
    config: dict[str, Any],
    key: str,
    minimum: float,
    maximum: float | None = None,
    above_minimum: bool = False,
) -> float:
    """`key` a number >= `minimum` (> with `above_minimum`) and <= `maximum` when given."""
    value = config.get(key)
    bounds = (
        f"{'(' if above_minimum else '['}{minimum}, {'inf)' if maximum is None else f'{maximum}]'}"
    )
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if (
        not is_number
        or (value <= minimum if above_minimum else value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ConfigError(f"{section_key(config)}.{key}: {value!r} is not a number in {bounds}")
    return float(value)


def choice(
    config: dict[str, Any], key: str, allowed: Iterable[str], where: str | None = None
) -> str:
    value = config.get(key)
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{section_key(config, where)}.{key}: {value!r} not in {allowed}")
    return value
