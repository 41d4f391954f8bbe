"""Spec files for the data-services actions: schemas, defaults, resolution and writing.

One JSON Schema per container action lives in ``tao_aoi/schemas/<category>_<action>.schema.json``.
A run's configuration is resolved the way the container does it:

    schema defaults  <-  spec YAML (``-e``)  <-  trailing ``key=value`` overrides (win)

Override values are parsed by omegaconf (``min_recall=1`` is a number, ``x=null`` is None).
``???`` marks a mandatory value that is still missing; after merging it is an error naming
the key. Renamed keys (old container releases) are accepted through an alias table with a
notice on stderr. The merged result is validated against the schema (jsonschema); any
problem is a :class:`tao_aoi.cli.UsageError` with one line naming the key.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import dataclasses
import functools
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any, Iterable, Mapping

from tao_aoi.cli import UsageError, one_line
from tao_aoi.paths import is_within
from tao_aoi.yaml_files import load_mapping

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MISSING = "???"
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Plain path text ("/data/exp/rca", "out/run_1"): omegaconf reads it as that same string
# (the '/' makes it several tokens, never a number/bool/null), so it skips the parser (~80 ms).
_PATH_TEXT_RE = re.compile(r"[A-Za-z0-9_./-]*/[A-Za-z0-9_./-]*")
_JSON_TYPE_NAMES = {"string": "a string", "number": "a number", "integer": "an integer",
                    "boolean": "a boolean (true/false)", "null": "null", "object": "a mapping",
                    "array": "a list"}


def schema_path(category: str, action: str) -> Path:
    return SCHEMA_DIR / f"{category}_{action}.schema.json"


def load_schema(category: str, action: str) -> dict:
    """The JSON Schema of one action; UsageError when the action has none."""
    path = schema_path(category, action)
    if not path.is_file():
        raise UsageError(f"no schema for '{category} {action}' (looked for {path})")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def schema_defaults(schema: Mapping) -> dict:
    """Every key of the schema with its default; mandatory keys (no default) hold ``???``."""
    out: dict[str, Any] = {}
    for key, prop in schema.get("properties", {}).items():
        out[key] = prop["default"] if "default" in prop else MISSING
    return out


def _type_names(prop: Mapping) -> list[str]:
    t = prop.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def expected_type(prop: Mapping) -> str:
    names = _type_names(prop)
    return " or ".join(_JSON_TYPE_NAMES.get(n, n) for n in names) or "any value"


def _note(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr)


def _apply_aliases(values: dict, aliases: Mapping[str, str], source: str) -> dict:
    out = dict(values)
    for old, new in aliases.items():
        if old not in out:
            continue
        if new in out:
            raise UsageError(f"{source}: both '{old}' (old name) and '{new}' are set; keep only '{new}'")
        _note(f"'{old}' in {source} is the old name of '{new}'; using it as '{new}'")
        out[new] = out.pop(old)
    return out


def _check_keys(values: Iterable[str], schema: Mapping, source: str) -> None:
    known = list(schema.get("properties", {}))
    unknown = [k for k in values if k not in known]
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(repr(k) for k in unknown)} in {source}; "
                         f"valid keys: {', '.join(known)}")


def _is_text_key(prop: Mapping) -> bool:
    """Typed only as string, or string-first by default (the container reads
    ``filter_by_label`` as the string "false", though true/false are accepted too)."""
    types = _type_names(prop)
    return types == ["string"] or ("string" in types and isinstance(prop.get("default"), str))


def _coerce_strings(values: dict, schema: Mapping, raw: Mapping[str, str] | None = None) -> dict:
    """A text key keeps its text (``results_dir=2024_01_01`` stays a path, ``filter_by_label=false``
    stays "false"); an integer given for a number-only key becomes a float (``min_recall=1`` -> 1.0)."""
    props = schema.get("properties", {})
    out = dict(values)
    for key, value in values.items():
        if key in props and _type_names(props[key]) == ["number"] and type(value) is int:
            out[key] = float(value)  # min_recall=1 -> 1.0
            continue
        if key not in props or not _is_text_key(props[key]):
            continue
        if value is None or isinstance(value, (str, list, dict)):
            continue
        if raw is not None and key in raw:
            out[key] = raw[key]
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def _given(values: Mapping, raw: Mapping[str, str] | None, schema: Mapping,
           aliases: Mapping[str, str], source: str) -> dict:
    """Values from one source, old names renamed, keys checked, text keys kept as text."""
    values = _apply_aliases(dict(values), aliases, source)
    if raw is not None:
        raw = {aliases.get(k, k): v for k, v in raw.items()}
    _check_keys(values, schema, source)
    return _coerce_strings(values, schema, raw)


def parse_overrides(overrides: Iterable[str]) -> tuple[dict, dict]:
    """``key=value`` items -> (parsed values, raw texts). Hydra's ``+key``/``++key`` are accepted."""
    values: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise UsageError(f"override '{item}' is not key=value")
        if not _KEY_RE.match(key):
            raise UsageError(f"override key '{key}' is not a plain key name (nested keys are not used)")
        if text == "" or _PATH_TEXT_RE.fullmatch(text):
            values[key] = text  # Hydra reads ``key=`` as the empty string
        else:
            from omegaconf import OmegaConf  # imported only when a value needs it (~0.08 s)

            try:
                values[key] = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]),
                                                     resolve=False)["v"]
            except Exception as exc:  # omegaconf grammar errors
                raise UsageError(f"cannot parse override '{item}': {one_line(exc, None)}") from None
        raw[key] = text
    return values, raw


def load_spec_file(spec_path: str | os.PathLike) -> dict:
    data = load_mapping(spec_path, "spec file", empty_ok=True)
    return {str(k): v for k, v in data.items()}


def _resolve_interpolations(values: dict) -> dict:
    if not any(isinstance(v, str) and "${" in v for v in values.values()):
        return values
    from omegaconf import OmegaConf
    try:
        return OmegaConf.to_container(OmegaConf.create(values), resolve=True, throw_on_missing=False)
    except Exception as exc:
        raise UsageError(f"cannot resolve interpolation: {one_line(exc, None)}") from None


def missing_keys(values: Mapping) -> list[str]:
    return [k for k, v in values.items() if isinstance(v, str) and v == MISSING]


def validate(values: Mapping, schema: Mapping, allow_missing: bool = False) -> None:
    """jsonschema validation with one-line messages that name the key and the expected type."""
    import jsonschema

    missing = missing_keys(values)
    if missing and not allow_missing:
        raise UsageError(f"mandatory value missing (still '???'): {', '.join(missing)}; set it in the "
                         f"spec or pass {missing[0]}=<value> on the command line")
    checked = {k: v for k, v in values.items() if k not in missing}
    if allow_missing:
        schema = dict(schema)
        schema["required"] = [k for k in schema.get("required", []) if k not in missing]
    props = schema.get("properties", {})
    reported: dict[str, str] = {}   # checks jsonschema gets wrong; their keys are not re-reported
    for key, value in checked.items():
        # ranges let NaN and inf through (every comparison with NaN is false), an integer key
        # takes 1e308, and "" for a mandatory path would silently mean the current folder
        if isinstance(value, float) and not math.isfinite(value):
            reported[key] = f"{key}: {value!r} is not a finite number"
        elif isinstance(value, float) and _type_names(props.get(key, {})) == ["integer"]:
            reported[key] = f"{key}: expected an integer, got {value!r}"
        elif key in schema.get("required", ()) and isinstance(value, str) and not value.strip():
            reported[key] = f"{key} is empty; give a value"
    problems = list(reported.values())
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(checked), key=lambda e: list(e.absolute_path)):
        key = err.absolute_path[0] if err.absolute_path else None
        if key in reported:
            continue
        prop = props.get(key, {}) if key is not None else {}
        if err.validator == "type":
            problems.append(f"{key}: expected {expected_type(prop)}, got {err.instance!r}")
        elif err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            problems.append(f"{key}: {err.instance!r} is out of range ({_range_text(prop)})")
        elif err.validator == "enum":
            problems.append(f"{key}: {err.instance!r} is not one of {', '.join(map(repr, prop['enum']))}")
        elif err.validator == "additionalProperties":
            problems.append(f"unknown key(s): {err.message}; valid keys: {', '.join(props)}")
        elif err.validator == "required":
            problems.append(f"mandatory value missing: {err.message}")
        else:
            where = f"{key}: " if key is not None else ""
            problems.append(f"{where}{one_line(err.message, None)}")
    if problems:
        raise UsageError("; ".join(problems))


def _range_text(prop: Mapping) -> str:
    lo = "(" + str(prop["exclusiveMinimum"]) if "exclusiveMinimum" in prop else (
        "[" + str(prop["minimum"]) if "minimum" in prop else "(-inf")
    hi = str(prop["exclusiveMaximum"]) + ")" if "exclusiveMaximum" in prop else (
        str(prop["maximum"]) + "]" if "maximum" in prop else "inf)")
    return f"must be in {lo}, {hi}"


_PY_TYPES = {"string": str, "number": float, "integer": int, "boolean": bool,
             "null": type(None), "object": dict, "array": list}


class ActionConfig(MappingABC):
    """Base of the frozen per-action configs :func:`config_class` builds from a schema.

    Attributes are the schema's keys (``cfg.top_k_per_label``); it is also a read-only mapping
    (``cfg["top_k_per_label"]``, ``dict(cfg)``) so a config dumps to the spec YAML it came from.
    """

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


@functools.lru_cache(maxsize=None)
def config_class(category: str, action: str) -> type[ActionConfig]:
    """A frozen dataclass with one field per schema key, typed and ordered as the schema says.

    Built once per action from the schema, so the defaults and ranges live only there: a value
    reaches the dataclass only through :func:`resolve`, after the schema validated it."""
    fields = []
    for key, prop in load_schema(category, action).get("properties", {}).items():
        kinds = [_PY_TYPES.get(n, object) for n in _type_names(prop)] or [object]
        annotation = functools.reduce(lambda a, b: a | b, kinds)
        fields.append((key, annotation))
    name = "".join(part.title() for part in f"{category}_{action}".split("_")) + "Config"
    cls = dataclasses.make_dataclass(name, fields, bases=(ActionConfig,), frozen=True)
    cls.__module__ = __name__
    return cls


def resolve(category: str, action: str, spec_path: str | os.PathLike | None,
            overrides: Iterable[str] = (), aliases: Mapping[str, str] | None = None,
            allow_missing: bool = False) -> ActionConfig:
    """Defaults <- spec file <- overrides, aliases renamed, validated; the action's frozen config.

    ``allow_missing`` keeps ``???`` values instead of failing (used by ``--cfg=job``).
    """
    aliases = dict(aliases or {})
    schema = load_schema(category, action)
    merged = schema_defaults(schema)
    if spec_path is not None:
        merged.update(_given(load_spec_file(spec_path), None, schema, aliases, f"spec {spec_path}"))
    values, raw = parse_overrides(overrides)
    merged.update(_given(values, raw, schema, aliases, "the overrides"))
    merged = _resolve_interpolations(merged)
    validate(merged, schema, allow_missing=allow_missing)
    return config_class(category, action)(**merged)


def make_config(category: str, action: str, values: Mapping) -> ActionConfig:
    """The action's frozen config from an already resolved config or a plain mapping (a test, a
    caller in Python): schema defaults filled in, validated exactly as :func:`resolve` does."""
    cls = config_class(category, action)
    if isinstance(values, cls):
        return values
    schema = load_schema(category, action)
    merged = schema_defaults(schema)
    merged.update(_given(values, None, schema, {}, "the config"))
    validate(merged, schema)
    return cls(**merged)


def dump_yaml(values: Mapping) -> str:
    import yaml

    return yaml.safe_dump(dict(values), sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_spec(category: str, action: str, values: Mapping, dest: str | os.PathLike,
               workspace: str | os.PathLike | None = None,
               aliases: Mapping[str, str] | None = None,
               raw: Mapping[str, str] | None = None) -> Path:
    """Write a spec YAML (every schema key, in schema order) after validating ``values``.

    Unknown keys and wrong types are refused; mandatory keys not given are written as ``???``
    (to be supplied as overrides at run time). ``dest`` outside ``workspace`` is refused.
    Keys marked ``x-local-only`` in the schema are written only when given: the container's
    schema does not know them, and the same spec must drive either backend. ``raw`` holds the
    command-line texts of ``values`` (from :func:`parse_overrides`): text keys keep them.
    """
    from tao_aoi import atomic

    schema = load_schema(category, action)
    dest_path = Path(os.path.abspath(os.fspath(dest)))
    if workspace is not None:
        root = Path(os.path.realpath(os.fspath(workspace)))
        real_dest = Path(os.path.realpath(dest_path))
        if not is_within(real_dest, root):
            raise UsageError(f"refusing to write {dest_path}: it is outside the workspace {root}")
    given = _given(values, raw, schema, dict(aliases or {}), "the values")
    merged = {key: value for key, value in schema_defaults(schema).items()
              if key in given or not schema["properties"][key].get("x-local-only")}
    merged.update(given)
    validate(merged, schema, allow_missing=True)
    if dest_path.exists() and dest_path.is_dir():
        raise UsageError(f"--out {dest_path} is a directory; give a file path such as {dest_path}/spec.yaml")
    atomic.write_text(dest_path, dump_yaml(merged))
    return dest_path
