"""Config files: YAML → a validated schema (RunConfig by default), with every mistake named by
file, line and key path; and the README's reference tables, generated from the schemas."""
from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from cluster.config import RunConfig


class ConfigError(Exception):
    """A config that cannot run; the message names the file, line and key path."""


def load_config(path: str | Path, overrides: dict | None = None, schema: type[BaseModel] | None = None):
    """The validated config (a RunConfig unless `schema` says otherwise)."""
    schema = schema or RunConfig
    path = Path(path)
    raw, lines = read_yaml(path, "config", ConfigError, "a mapping of sections")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(path, e, lines, schema)) from None


def read_yaml(path: Path, what: str, error: type[Exception], top: str) -> tuple[dict, dict[tuple, int]]:
    """(the YAML mapping in `path`, the line of each key path); `error` names the file, and the line
    where there is one, when it cannot be read, is not YAML, or is not a mapping (of `top`)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
        lines = key_lines(yaml.compose(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise error(f"{path}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    raw = {} if raw is None else raw  # an empty file: the schema names what is missing
    if not isinstance(raw, dict):
        raise error(f"{path}: the top level must be {top}")
    return raw, lines


def set_dotted(raw: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def key_lines(node, prefix: tuple = ()) -> dict[tuple, int]:
    """1-based line of every key path in a YAML node tree; list items are keyed by their index."""
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.SequenceNode):
        items = [(str(i), v, v) for i, v in enumerate(node.value)]
    elif isinstance(node, yaml.MappingNode):
        items = [(k.value, k, v) for k, v in node.value]
    else:
        items = []
    for key, mark_node, value in items:
        out[prefix + (key,)] = mark_node.start_mark.line + 1
        out.update(key_lines(value, prefix + (key,)))
    return out


def _section(ann) -> type[BaseModel] | None:
    """The section model of a field: `X`, `X | None`, `list[X]` or `list[X] | None` (X a BaseModel)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return next((m for m in map(_section, get_args(ann)) if m is not None), None)


def _is_list(ann) -> bool:
    return get_origin(ann) is list or any(_is_list(a) for a in get_args(ann))


def allowed_keys(loc: tuple, schema: type[BaseModel]) -> list[str]:
    model = schema
    for part in loc[:-1]:
        if part.isdigit():  # a list item
            continue
        field = model.model_fields.get(str(part))
        sub = _section(field.annotation) if field else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def format_errors(path: Path, err: ValidationError, lines: dict[tuple, int], schema: type[BaseModel]) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc) or "(top level)"
        line = lines.get(loc)
        where = f"{path}:{line}" if line else str(path)
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed here: {', '.join(allowed_keys(loc, schema))}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
        msgs.append(f"{where}: {key}: {msg}")
    return "invalid config\n  " + "\n  ".join(msgs)


def type_name(ann) -> str:
    if get_origin(ann) is Literal:
        return " or ".join(f"`{a}`" for a in get_args(ann))
    if get_args(ann) and get_origin(ann) in (Union, UnionType):
        return " or ".join(type_name(a) for a in get_args(ann))
    return "None" if ann is type(None) else getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def reference_markdown(schema: type[BaseModel] | None = None) -> str:
    """A config reference table for the README, generated from the schema's field docstrings."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    listed: dict = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            sub = _section(ann)
            if sub is not None:
                if _is_list(ann):
                    doc = (field.description or "").replace("|", "\\|")
                    same = f" Each item has the keys of `{listed[sub]}[]`." if sub in listed else ""
                    rows.append(f"| `{prefix}{name}` | list of sections, or None | `{field.default}` | {doc}{same} |")
                    if same:
                        continue
                    listed[sub] = f"{prefix}{name}"
                walk(sub, f"{prefix}{name}[]." if _is_list(ann) else f"{prefix}{name}.")
                continue
            kind = type_name(ann)
            default = "required" if field.is_required() else f"`{field.default}`"
            bounds = ", ".join(f"{sym} {getattr(m, attr)}" for m in field.metadata
                               for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
                               if hasattr(m, attr))
            doc = (field.description or "").replace("\n", " ").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {kind}{f' ({bounds})' if bounds else ''} | {default} | {doc} |")

    walk(schema or RunConfig, "")
    return "\n".join(rows)
