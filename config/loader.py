"""Read the TOML file and `TELGATE_*` environment overrides into a validated `Config`.

Validation collects every problem before failing, each naming its dotted key, so that an
operator fixes a file in one pass. Environment variables map to keys by upper-casing and
joining sections with a double underscore: `TELGATE_API__PORT=9000` sets `api.port`,
`TELGATE_STATE_DIR=./var` sets `state_dir`. Environment values are parsed as TOML values when
they parse (numbers, booleans, quoted strings), else taken as plain strings.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from config.schema import Config

ENV_PREFIX = "TELGATE_"
# TELGATE_* variables that are not configuration keys: the config file path, the API key
# the README tells users to export, and test-suite settings.
RESERVED_ENV = frozenset({"TELGATE_CONFIG", "TELGATE_KEY"})
RESERVED_ENV_PREFIXES = ("TELGATE_TEST_",)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration, at one key."""

    key: str
    message: str
    source: str  # the file path or "environment"

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path` (optional) and the environment overrides; raise ConfigError listing all problems."""
    problems: list[ConfigProblem] = []
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([ConfigProblem("-", "file not found", str(path))]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([ConfigProblem("-", f"not valid TOML: {exc}", str(path))]) from None
    for env_key, raw in sorted((environ or {}).items()):
        if not env_key.startswith(ENV_PREFIX) or env_key in RESERVED_ENV or env_key.startswith(
                RESERVED_ENV_PREFIXES):
            continue
        parts = [p.lower() for p in env_key[len(ENV_PREFIX) :].split("__")]
        target = data
        for part in parts[:-1]:
            nxt = target.setdefault(part, {})
            if not isinstance(nxt, dict):
                problems.append(ConfigProblem(".".join(parts), "is not a section", "environment"))
                break
            target = nxt
        else:
            target[parts[-1]] = _env_value(raw)
            origin[".".join(parts)] = f"environment ({env_key})"
    config = _build(Config, data, "", problems, source, origin)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _build(
    cls: type[T],
    data: Any,
    prefix: str,
    problems: list[ConfigProblem],
    source: str,
    origin: dict[str, str],
) -> T | None:
    if not isinstance(data, dict):
        problems.append(ConfigProblem(prefix or "-", "expected a table (section)", source))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            where = origin.get(_join(prefix, key), source)
            known = ", ".join(sorted(fields))
            problems.append(
                ConfigProblem(_join(prefix, key), f"unknown key (known keys here: {known})", where)
            )
    values: dict[str, Any] = {}
    for name, fdef in fields.items():
        if name not in data:
            if fdef.default is dataclasses.MISSING and fdef.default_factory is dataclasses.MISSING:
                problems.append(ConfigProblem(_join(prefix, name), "is required", source))
            continue
        key = _join(prefix, name)
        where = origin.get(key, source)
        value = _convert(hints[name], data[name], key, problems, where, origin, source)
        if value is _INVALID:
            continue
        _check_bounds(fdef.metadata, value, key, problems, where)
        values[name] = value
    try:
        return cls(**values)
    except TypeError:
        return None


class _Invalid:
    pass


_INVALID = _Invalid()


def _convert(
    tp: Any,
    value: Any,
    key: str,
    problems: list[ConfigProblem],
    where: str,
    origin: dict[str, str],
    source: str,
) -> Any:
    origin_tp = get_origin(tp)
    if origin_tp in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, key, problems, where, origin, source)
    if origin_tp is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = " | ".join(repr(a) for a in allowed)
            problems.append(ConfigProblem(key, f"expected one of {choices}, got {value!r}", where))
            return _INVALID
        return value
    if origin_tp in (list, tuple):
        (item_tp, *_rest) = get_args(tp)
        if not isinstance(value, list):
            problems.append(ConfigProblem(key, f"expected a list, got {_kind(value)}", where))
            return _INVALID
        items = [
            _convert(item_tp, v, f"{key}[{i}]", problems, where, origin, source)
            for i, v in enumerate(value)
        ]
        if any(i is _INVALID for i in items):
            return _INVALID
        return tuple(items) if origin_tp is tuple else items
    if origin_tp is dict:
        if not isinstance(value, dict):
            problems.append(ConfigProblem(key, f"expected a table, got {_kind(value)}", where))
            return _INVALID
        _k_tp, v_tp = get_args(tp)
        out = {
            str(k): _convert(v_tp, v, f"{key}.{k}", problems, where, origin, source)
            for k, v in value.items()
        }
        return _INVALID if any(v is _INVALID for v in out.values()) else out
    if dataclasses.is_dataclass(tp):
        built = _build(tp, value, key, problems, source, origin)  # type: ignore[arg-type]
        return _INVALID if built is None else built
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(ConfigProblem(key, f"expected true or false, got {_kind(value)}", where))
        return _INVALID
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(ConfigProblem(key, f"expected an integer, got {_kind(value)}", where))
        return _INVALID
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        problems.append(ConfigProblem(key, f"expected a number, got {_kind(value)}", where))
        return _INVALID
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(ConfigProblem(key, f"expected a string, got {_kind(value)}", where))
        return _INVALID
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        problems.append(ConfigProblem(key, f"expected a path string, got {_kind(value)}", where))
        return _INVALID
    raise TypeError(f"config schema uses an unsupported type at {key}: {tp!r}")


def _check_bounds(
    meta: Mapping[str, Any], value: Any, key: str, problems: list[ConfigProblem], where: str
) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        problems.append(ConfigProblem(key, f"must be at least {low:g}, got {value}", where))
    if high is not None and value > high:
        problems.append(ConfigProblem(key, f"must be at most {high:g}, got {value}", where))


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    for t, n in names.items():
        if type(value) is t:
            return f"{n} ({value!r})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def redacted(config: object) -> dict[str, Any]:
    """The configuration as a plain dict with every secret field replaced by '***'."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if f.metadata.get("secret") and value is not None:
            out[f.name] = "***"
        elif dataclasses.is_dataclass(value):
            out[f.name] = redacted(value)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif isinstance(value, list | tuple):
            out[f.name] = [redacted(v) if dataclasses.is_dataclass(v) else v for v in value]
        else:
            out[f.name] = value
    return out
