"""Dataclass configs that serialise to and from plain JSON dicts, strictly."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Type, TypeVar

T = TypeVar("T", bound="ConfigBase")


def _convert(tp, value, where: str):
    """Turn a JSON value back into the annotated type (nested dataclasses, tuples, optionals)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, where)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return tp.from_dict(value) if hasattr(tp, "from_dict") else tp(**value)
    if origin in (tuple,) and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if args:
            return tuple(_convert(a, v, where) for a, v in zip(args, value))
        return tuple(value)
    if origin in (list,) and isinstance(value, (list, tuple)):
        return [_convert(args[0], v, where) if args else v for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclasses.dataclass
class ConfigBase:
    """Base for every family's config: ``to_dict``/``from_dict`` round trip through JSON.

    ``from_dict`` refuses unknown keys (naming them), so a config from another family or a typo fails loudly
    instead of being ignored.
    """

    def to_dict(self) -> Dict[str, Any]:
        def conv(v):
            if dataclasses.is_dataclass(v):
                return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v
        return conv(self)

    @classmethod
    def from_dict(cls: Type[T], data: Dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; known keys are {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _convert(hints.get(k, Any), v, f"{cls.__name__}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"{cls.__name__}: cannot build config from {sorted(data)}: {exc}") from exc
