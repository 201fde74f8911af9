"""Check a request against an OpenAPI document, strictly: what the spec does not define is a violation.

Beyond JSON Schema validation of the body, :class:`SpecValidator` reports body properties
the schema does not define (walking ``allOf``/``anyOf``/``oneOf``, so "send only fields
the spec defines" holds even where the spec leaves ``additionalProperties`` open by
omission), query parameters the operation does not declare, and deepObject keys
(``filter[x]``) that are not properties of the parameter's schema.

OpenAPI 3.0's ``nullable: true`` (which StackOne's 3.1 document still uses) is read as
"null is allowed too". Compiled validators are built once per operation: this runs on
every request the StackOne stand-in receives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import best_match

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_DEEP = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")
_DROP = frozenset({"description", "example", "examples", "deprecated", "externalDocs", "xml"})
_MESSAGE_LIMIT = 200


def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time with a 'T' and a zone (Z or an offset)."""
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        raise ValueError(value)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(value)
    return True


_FORMATS = jsonschema.FormatChecker(formats=())
_FORMATS.checks("date-time", raises=ValueError)(_is_date_time)


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    required: bool
    schema: dict[str, Any]


@dataclass(slots=True)
class _Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    headers: list[_Param] = field(default_factory=list)
    query: dict[str, _Param] = field(default_factory=dict)
    basic_auth: bool = False
    body_required: bool = False
    body_types: tuple[str, ...] = ()
    body_schema: dict[str, Any] | None = None
    validator: Any = None  # jsonschema.Draft202012Validator, compiled once


class SpecValidator:
    """Validates requests against one OpenAPI document (JSON)."""

    def __init__(self, spec_path: str | Path) -> None:
        self._spec: dict[str, Any] = orjson.loads(Path(spec_path).read_bytes())
        self._refs: dict[str, Any] = {}
        self._resolving: set[str] = set()
        self._views: dict[int, tuple[dict[str, list[dict[str, Any]]], bool] | None] = {}
        self._operations: dict[str, list[_Operation]] = {}
        for template, item in self._spec.get("paths", {}).items():
            pattern = _template_pattern(template)
            shared = item.get("parameters", [])
            for method in _METHODS:
                if method in item:
                    op = self._compile(method.upper(), template, pattern, item[method], shared)
                    self._operations.setdefault(op.method, []).append(op)
        # Literal paths win over templated ones (``/content/batch`` before ``/content/{id}``).
        for ops in self._operations.values():
            ops.sort(key=lambda o: o.template.count("{"))

    # --- public -------------------------------------------------------------------------

    def check(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: Any
    ) -> list[str]:
        """Every way this request departs from the spec; empty when it is valid."""
        method = method.upper()
        op = next((o for o in self._operations.get(method, []) if o.pattern.fullmatch(path)), None)
        if op is None:
            allowed = sorted(m for m, ops in self._operations.items() for o in ops if o.pattern.fullmatch(path))
            if allowed:
                return [f"{method} {path}: method not defined by the spec (defined: {', '.join(allowed)})"]
            return [f"{method} {path}: no such path in the spec"]
        out: list[str] = []
        lowered = {k.lower(): v for k, v in headers.items()}
        for param in op.headers:
            if param.required and not lowered.get(param.name.lower()):
                out.append(f"header {param.name}: required")
        if op.basic_auth and not lowered.get("authorization", "").startswith("Basic "):
            out.append("header Authorization: HTTP Basic auth required")
        self._check_query(op, query, out)
        self._check_body(op, lowered, body, out)
        return out

    # --- compile ------------------------------------------------------------------------

    def _compile(
        self, method: str, template: str, pattern: re.Pattern[str], raw: dict[str, Any], shared: list[Any]
    ) -> _Operation:
        op = _Operation(method=method, template=template, pattern=pattern)
        params: dict[tuple[str, str], dict[str, Any]] = {}
        for p in [*shared, *raw.get("parameters", [])]:
            p = self._deref(p)
            params[(p["name"], p["in"])] = p
        for (name, where), p in params.items():
            param = _Param(name, bool(p.get("required")), self._prepare(p.get("schema", {})))
            if where == "header":
                op.headers.append(param)
            elif where == "query":
                op.query[name] = param
        security = raw.get("security", self._spec.get("security", []))
        schemes = self._spec.get("components", {}).get("securitySchemes", {})
        op.basic_auth = any(
            schemes.get(name, {}).get("scheme", "").lower() == "basic" for req in security for name in req
        )
        body = raw.get("requestBody")
        if body is not None:
            body = self._deref(body)
            op.body_required = bool(body.get("required"))
            content = body.get("content", {})
            op.body_types = tuple(content)
            media = content.get("application/json")
            if media is not None and "schema" in media:
                op.body_schema = self._prepare(media["schema"])
                op.validator = jsonschema.Draft202012Validator(op.body_schema, format_checker=_FORMATS)
        return op

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self._lookup(node["$ref"])
        return node

    def _lookup(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported: {ref}")
        node: Any = self._spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(node, dict):
            raise ValueError(f"$ref {ref} is not an object")
        return node

    def _prepare(self, node: Any) -> Any:
        """Inline ``$ref``, read ``nullable``, drop documentation keywords: a plain 2020-12 schema."""
        if isinstance(node, list):
            return [self._prepare(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            if ref in self._resolving:  # recursive schema: accept anything below this point
                return {}
            if ref not in self._refs:
                self._resolving.add(ref)
                self._refs[ref] = self._prepare(self._lookup(ref))
                self._resolving.discard(ref)
            siblings = {k: v for k, v in node.items() if k != "$ref" and k not in _DROP}
            if not siblings:
                return self._refs[ref]
            return {"allOf": [self._refs[ref]], **self._prepare(siblings)}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key.startswith("x-"):
                continue
            if key in ("properties", "patternProperties", "$defs", "definitions"):
                out[key] = {k: self._prepare(v) for k, v in value.items()}
            elif key == "enum" or key == "const":
                out[key] = value
            else:
                out[key] = self._prepare(value)
        if out.pop("nullable", False) is True:
            kind = out.get("type")
            if isinstance(kind, str) and not any(k in out for k in ("allOf", "anyOf", "oneOf")):
                out["type"] = [kind, "null"]
                if "enum" in out and None not in out["enum"]:
                    out["enum"] = [*out["enum"], None]
            else:
                return {"anyOf": [{"type": "null"}, out]}
        return out

    # --- checks -------------------------------------------------------------------------

    def _check_query(self, op: _Operation, query: Mapping[str, str], out: list[str]) -> None:
        seen: set[str] = set()
        for key, value in query.items():
            deep = _DEEP.match(key)
            if deep is not None:
                name, prop = deep.groups()
                param = op.query.get(name)
                if param is None:
                    out.append(f"query {key}: parameter {name} not defined by the spec")
                    continue
                seen.add(name)
                view = self._object_view(param.schema)
                if view is None:
                    out.append(f"query {key}: {name} is not an object parameter")
                    continue
                props, open_ = view
                if prop not in props:
                    if not open_:
                        out.append(f"query {key}: {prop} is not a property of {name}")
                    continue
                for schema in props[prop]:
                    out.extend(f"query {key}: {m}" for m in _scalar_problems(value, schema))
                continue
            param = op.query.get(key)
            if param is None:
                out.append(f"query {key}: parameter not defined by the spec")
                continue
            seen.add(key)
            if self._object_view(param.schema) is not None:
                out.append(f"query {key}: an object parameter must be sent as {key}[property]")
                continue
            out.extend(f"query {key}: {m}" for m in _scalar_problems(value, param.schema))
        for name, param in op.query.items():
            if param.required and name not in seen:
                out.append(f"query {name}: required")

    def _check_body(self, op: _Operation, headers: Mapping[str, str], body: Any, out: list[str]) -> None:
        if body is None:
            if op.body_required:
                out.append("body: required")
            return
        if not op.body_types:
            out.append("body: this operation takes no body")
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in op.body_types:
            out.append(f"header Content-Type: {content_type or 'missing'}; expected one of {', '.join(op.body_types)}")
        if op.validator is None or op.body_schema is None:
            return
        for error in op.validator.iter_errors(body):
            best = best_match([error])
            out.append(f"{_where(best.absolute_path)}: {_short(best.message)}")
        self._unknown_properties(op.body_schema, body, "body", out)

    def _object_view(self, schema: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], bool] | None:
        """The properties an object may have under ``schema`` (with their schemas), and whether others may appear.

        ``None`` when ``schema`` does not describe an object at all.
        """
        key = id(schema)
        if key in self._views:
            return self._views[key]
        props: dict[str, list[dict[str, Any]]] = {}
        flags = {"object": False, "defined": False, "open": False}
        self._collect(schema, props, flags)
        view = None
        if flags["object"]:
            view = (props, flags["open"] or not flags["defined"])
        self._views[key] = view
        return view

    def _collect(self, schema: Any, props: dict[str, list[dict[str, Any]]], flags: dict[str, bool]) -> None:
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "object" in kinds or "properties" in schema or "additionalProperties" in schema:
            flags["object"] = True
        if "properties" in schema:
            flags["defined"] = True
            for name, sub in schema["properties"].items():
                props.setdefault(name, []).append(sub)
        extra = schema.get("additionalProperties")
        if extra is not None and extra is not False:
            flags["open"] = True
        if "patternProperties" in schema:
            flags["open"] = True
        for combinator in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(combinator, []):
                self._collect(sub, props, flags)

    def _unknown_properties(self, schema: dict[str, Any], value: Any, where: str, out: list[str]) -> None:
        if isinstance(value, dict):
            view = self._object_view(schema)
            if view is None:
                return
            props, open_ = view
            for key, item in value.items():
                if key not in props:
                    if not open_:
                        out.append(f"{where}.{key}: not defined by the spec")
                    continue
                for sub in props[key]:
                    self._unknown_properties(sub, item, f"{where}.{key}", out)
        elif isinstance(value, list):
            for items in _item_schemas(schema):
                for index, item in enumerate(value):
                    self._unknown_properties(items, item, f"{where}[{index}]", out)


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(regex)


def _item_schemas(schema: Any) -> list[dict[str, Any]]:
    if not isinstance(schema, dict):
        return []
    found: list[dict[str, Any]] = []
    if isinstance(schema.get("items"), dict):
        found.append(schema["items"])
    for combinator in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(combinator, []):
            found.extend(_item_schemas(sub))
    return found


def _scalar_problems(value: str, schema: dict[str, Any]) -> list[str]:
    """Problems with a query string value under a scalar schema (strings arrive as strings)."""
    kind = schema.get("type")
    kinds = set(kind if isinstance(kind, list) else [kind] if kind else [])
    problems: list[str] = []
    if kinds and "string" not in kinds:
        if "boolean" in kinds and value not in ("true", "false"):
            problems.append(f"{value!r} is not a boolean")
        elif kinds & {"integer", "number"}:
            try:
                float(value)
            except ValueError:
                problems.append(f"{value!r} is not a number")
    if "enum" in schema and value not in [v for v in schema["enum"] if v is not None]:
        problems.append(f"{value!r} is not one of {[v for v in schema['enum'] if v is not None]}")
    if schema.get("format") == "date-time":
        try:
            _is_date_time(value)
        except ValueError:
            problems.append(f"{value!r} is not an RFC 3339 date-time")
    for sub in schema.get("anyOf", []):  # a nullable scalar: check the non-null branch
        if sub.get("type") != "null":
            problems.extend(_scalar_problems(value, sub))
    return problems


def _where(path: Any) -> str:
    out = "body"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(message: str) -> str:
    return message if len(message) <= _MESSAGE_LIMIT else message[: _MESSAGE_LIMIT - 3] + "..."
