"""JSON request bodies: counted before they are parsed, then validated from bytes against the route's model with
its lists bounded by MEDIX_MAX_ITEMS_PER_REQUEST, so that no body costs more than a full batch to refuse.

The guard (middleware.py) reads the body within its limits and counts its JSON elements as the bytes arrive;
`JsonBodyRoute` validates it and hands FastAPI the model, which FastAPI then takes as it is.
"""

from __future__ import annotations

import asyncio
import functools
import json
import types
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Union, get_args, get_origin

from annotated_types import MaxLen
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError, create_model
from starlette.exceptions import HTTPException

# JSON elements (array values and object entries) a body may hold per item it may carry: a /reward item is about
# 6, a /get_reward query 3; the rest is room for the extras trainers add. Never fewer than MIN_JSON_ELEMENTS.
JSON_ELEMENTS_PER_ITEM = 64
MIN_JSON_ELEMENTS = 65_536
# The scope state key of the callable that gives back a request's share of MEDIX_MAX_PARSING_BYTES once parsed.
RELEASE_BODY_BYTES = "release_body_bytes"

_WINDOW = 1 << 20


def json_element_limit(max_items_per_request: int) -> int:
    return max(MIN_JSON_ELEMENTS, JSON_ELEMENTS_PER_ITEM * max_items_per_request)


class ElementCount:
    """A body's JSON elements (array values and object entries, plus the root; an empty `[]` or `{}` counts one),
    counted as its chunks arrive. The running count (commas and opened containers) is an upper bound, as fast as
    `bytes.count`; only a body over the limit by it is counted again with its strings left out (a string's commas
    are no elements), so that text never refuses a valid body."""

    def __init__(self) -> None:
        self.bound = 1

    def add(self, chunk: bytes) -> None:
        self.bound += chunk.count(b",") + chunk.count(b"{") + chunk.count(b"[")

    async def over(self, body: bytes, limit: int) -> int | None:
        """The body's element count if it is over `limit` (at least that many), else None. Escapes are dropped
        first (escaped backslashes, then escaped quotes: every quote left opens or closes a string), then strings
        are skipped by `bytes.find`; the count stops as soon as it is over, and the event loop gets a turn every
        4,096 strings and every megabyte outside strings."""
        if self.bound <= limit:
            return None
        plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # the same object when there is no backslash
        # Each element holds at most two strings (a key and its value): past 2 * limit strings, stop looking.
        strings = plain.count(b'"') // 2
        if strings > 2 * limit:
            return max(strings // 2, limit + 1)
        count, pos, seen, find, tally = 1, 0, 0, plain.find, plain.count
        while count <= limit:
            start = find(b'"', pos)
            stop = len(plain) if start < 0 else start
            while pos < stop:  # by the megabyte: a long run outside strings is cut short once over
                step = min(stop, pos + _WINDOW)
                count += tally(b",", pos, step) + tally(b"{", pos, step) + tally(b"[", pos, step)
                if count > limit:
                    return count
                pos = step
                if pos < stop:
                    await asyncio.sleep(0)
            if start < 0:
                return None
            end = find(b'"', start + 1)
            if end < 0:
                return None  # an unterminated string: the parser answers
            pos, seen = end + 1, seen + 1
            if seen % 4096 == 0:
                await asyncio.sleep(0)
        return count


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this content type as JSON (`application/json`, `application/*+json`)."""
    if not content_type:
        return False
    main, _, sub = content_type.split(";", 1)[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _has_list(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_has_list(a) for a in get_args(annotation))
    return get_origin(annotation) is list


def _bound(annotation: Any, max_items: int) -> Any:
    if get_origin(annotation) is list:
        return Annotated[annotation, MaxLen(max_items)]
    if get_origin(annotation) in (Union, types.UnionType):
        return Union[tuple(_bound(a, max_items) for a in get_args(annotation))]  # noqa: UP007
    return annotation


@functools.cache
def bounded(model: type[BaseModel], max_items: int) -> type[BaseModel]:
    """`model` with each of its list fields (`items`; `query`, `prompts`, `labels`) held to `max_items`: pydantic
    refuses a longer list before it validates any element of it. A subclass, so the routes' types hold."""
    fields = {name: (_bound(info.annotation, max_items), info) for name, info in model.model_fields.items()
              if _has_list(info.annotation)}
    if not fields:
        return model
    return create_model(model.__name__, __base__=model, __module__=model.__module__, **fields)


def _in_body(errors: list[Any]) -> list[Any]:
    return [{**e, "loc": ("body", *e.get("loc", ()))} for e in errors]


def parse_json_body(model: type[BaseModel], body: bytes) -> BaseModel:
    """Validate `body` from bytes; errors as FastAPI raises them (RequestValidationError, or a 400 for a body
    that is no text at all), never with the input in them."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if not errors or errors[0]["type"] != "json_invalid":
            raise RequestValidationError(_in_body(errors)) from None
    # pydantic's reader refuses some JSON that Python's takes and the schema then names (a lone surrogate escape,
    # see runtime/wire.py's Text) and gives no offset: read such a body as FastAPI would, for the same answers.
    # The guard's element count bounds this second reading too.
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": exc.msg}}]) from None
    except Exception as exc:  # not UTF-8, nested too deep
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(_in_body(exc.errors(include_url=False, include_input=False))) from None


class _Parsed(Request):
    """The request with its body read and its JSON already validated: FastAPI takes the model as it is."""

    def __init__(self, request: Request, body: bytes, parsed: BaseModel) -> None:
        super().__init__(request.scope, request.receive)
        self._body, self._json = body, parsed


class JsonBodyRoute(APIRoute):
    """A route whose JSON body is validated from bytes against its model with the lists bounded (`bounded`),
    before FastAPI would read it into Python objects and validate them; then the guard's hold on the body's
    bytes (MEDIX_MAX_PARSING_BYTES) is given back. Other content types go to FastAPI as before."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = self.body_field.field_info.annotation if self.body_field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return handler

        async def handle(request: Request) -> Response:
            body = await request.body()
            if body and is_json(request.headers.get("content-type")):
                try:
                    limit = request.app.state.settings.max_items_per_request
                    request = _Parsed(request, body, parse_json_body(bounded(model, limit), body))
                finally:
                    release = request.scope.get("state", {}).get(RELEASE_BODY_BYTES)
                    if release is not None:
                        release()
            return await handler(request)

        return handle
