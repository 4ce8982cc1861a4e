"""422 answers in the user's words: which field, what shape it takes, an example, a near miss.

pydantic's own messages speak about Python ("Input should be a valid dictionary or
instance of LossSpec") and its locations carry the names of union members
(`["body", "threshold", "constrained-float"]`). A person who sent `"loss": "apl"` or
`"epoch": 3` needs to read that `loss` is an object such as `{"name": "apl"}` and that
`epochs` is the field they meant. This module rewrites each pydantic error into that
sentence; the request model of the route (found from its endpoint's annotations) gives
the names a misspelt field is compared with.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from pydantic import BaseModel

from core.errors import AppError

#: Union-member tags pydantic puts into a location; never a field name of ours.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "bytes", "list", "dict"})
#: Objects a person most often sends in the wrong shape, with what they look like.
EXAMPLES: dict[str, str] = {
    "loss": '{"name": "apl"}',
    "hyperparameters": '{"epochs": 3, "learning_rate": 5e-5}',
    "decision": '{"policy": "max_f1", "min_labels": 1}',
    "search": '{"trials": 8}',
    "candidates": '[{"name": "bce"}, {"name": "apl"}]',
    "seeds": "[0, 1, 2]",
    "inputs": '["a text", "another text"]',
}
_SHAPES: dict[str, str] = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_BOUNDS: dict[str, tuple[str, str]] = {
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
}


def clean_location(loc: Sequence[Any]) -> list[Any]:
    """The location without pydantic's union-member tags (`constrained-float`, `function-after[...]`)."""
    return [
        part
        for part in loc
        if not isinstance(part, str) or not (part in _TYPE_TAGS or "-" in part or "[" in part)
    ]


def field_name(loc: Sequence[Any]) -> str:
    """`loss.clip`, `hyperparameters.epochs`, `inputs[0]`: the field as a person writes it."""
    name = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "the request body"


def request_models(endpoint: Callable[..., Any] | None) -> list[type[BaseModel]]:
    """The pydantic models among an endpoint's parameters (the request body's)."""
    if endpoint is None:
        return []
    try:
        hints = typing.get_type_hints(endpoint)
    except (NameError, TypeError):
        return []
    return [model for name, hint in hints.items() if name != "return" for model in _models_in(hint)]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (Union, types.UnionType, list, tuple, Sequence):
        return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]
    return []


def _model_at(models: Sequence[type[BaseModel]], path: Sequence[Any]) -> type[BaseModel] | None:
    """The model whose field the last part of `path` names (walking fields and list items)."""
    for model in models:
        current: type[BaseModel] | None = model
        for part in path:
            if current is None:
                break
            if isinstance(part, int):
                continue
            field = current.model_fields.get(part)
            inner = _models_in(field.annotation) if field is not None else []
            current = inner[0] if inner else None
        if current is not None:
            return current
    return None


def _near_miss(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unknown_field(loc: list[Any], models: Sequence[type[BaseModel]]) -> str:
    name = str(loc[-1])
    parent = _model_at(models, [p for p in loc[:-1] if p != "body"])
    parent_name = field_name(loc[:-1])
    where = parent_name if parent_name == "the request body" else f"`{parent_name}`"
    if parent is None:
        return f"{where} takes no field '{name}'"
    fields = sorted(parent.model_fields)
    listing = f" (it takes: {', '.join(fields)})" if len(fields) <= 12 else ""
    return f"{where} takes no field '{name}'{_near_miss(name, fields)}{listing}"


def _bound(error: Mapping[str, Any], field: str) -> str | None:
    key, words = _BOUNDS.get(error.get("type", ""), ("", ""))
    ctx = error.get("ctx") or {}
    if not key or key not in ctx:
        return None
    bound = ctx[key]
    shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
    return f"`{field}` must be {words} {shown} (got {_shown(error.get('input'))})"


def _choice(error: Mapping[str, Any], field: str) -> str:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    options = [part.strip(" '\"") for part in expected.replace(" or ", ",").split(",") if part.strip()]
    given = error.get("input")
    hint = _near_miss(given, options) if isinstance(given, str) else ""
    return f"`{field}` must be one of {expected} (got {_shown(given)}){hint}"


def _shape(error: Mapping[str, Any], field: str, last: Any) -> str | None:
    shape = _SHAPES.get(error.get("type", ""))
    if shape is None:
        return None
    example = EXAMPLES.get(str(last))
    tail = f', for example `"{last}": {example}`' if example else ""
    return f"`{field}` must be {shape} (got {_shown(error.get('input'))}){tail}"


def friendly_message(error: Mapping[str, Any], models: Sequence[type[BaseModel]]) -> str:
    """One pydantic error as a sentence naming the field, the shape it takes and an example."""
    loc = clean_location(error.get("loc", ()))
    field = field_name(loc)
    kind = error.get("type", "")
    last = loc[-1] if loc else None
    if kind == "missing":
        example = EXAMPLES.get(str(last))
        return f"`{field}` is required" + (f', for example `"{last}": {example}`' if example else "")
    if kind == "extra_forbidden":
        return _unknown_field(loc, models)
    if kind in ("literal_error", "enum"):
        return _choice(error, field)
    if kind == "json_invalid":
        return f"the body is not valid JSON: {(error.get('ctx') or {}).get('error', 'parse error')}"
    message = _bound(error, field) or _shape(error, field, last)
    if message:
        return message
    text = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"`{field}`: {text}" if loc else text


def describe(errors: Sequence[Mapping[str, Any]], models: Sequence[type[BaseModel]]) -> list[dict[str, Any]]:
    """The `errors` member of a 422: each location (without union tags) and its sentence.

    A value that fits no member of a union (`float | None`) gets one error per member at
    the same field; the first (the member a person meant) is kept.
    """
    described: list[dict[str, Any]] = []
    from_unions: set[tuple[Any, ...]] = set()
    for error in errors:
        raw = list(error.get("loc", ()))
        loc = clean_location(raw)
        if loc != raw:
            if tuple(loc) in from_unions:
                continue
            from_unions.add(tuple(loc))
        described.append({"loc": loc, "msg": friendly_message(error, models), "type": error.get("type", "")})
    return described


def validation_problem(
    errors: Sequence[Mapping[str, Any]],
    models: Sequence[type[BaseModel]],
    prefix: tuple[str | int, ...] = (),
) -> AppError:
    """The one 422 of the API for values pydantic refused; the detail is the first problem's sentence.

    `prefix` goes before each location when the model was validated by hand (the predict
    route reads its body itself) rather than by FastAPI, which already starts with "body".
    """
    described = describe([{**error, "loc": (*prefix, *error.get("loc", ()))} for error in errors], models)
    if not described:
        return AppError(422, "validation_error", "invalid request", errors=[])
    more = len(described) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return AppError(422, "validation_error", f"{described[0]['msg']}{tail}", errors=described)
