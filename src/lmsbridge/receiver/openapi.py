"""The receiver's own OpenAPI 3 document: one webhook path per source, health, metrics, errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmsbridge import __version__
from lmsbridge.settings import SourceSettings

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "code", "message"],
            "properties": {
                "type": {"type": "string"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "path": {"type": "string"},
            },
        }
    },
}

_REFUSALS = {
    "400": "Malformed request: not JSON, or a required header is missing or unreadable "
    "(codes `malformed_json`, `header_missing`, `header_invalid`), or not valid HTTP/1.1, e.g. a bad "
    "`Content-Length` or a control character in a header (code `malformed_http`; the connection is closed).",
    "401": "Signature refused (codes `signature_missing`, `signature_mismatch`, `timestamp_too_old`, "
    "`timestamp_in_future`).",
    "404": "No source with this name (code `unknown_source`).",
    "405": "Only POST is allowed (code `method_not_allowed`).",
    "408": "The body did not arrive within `receiver.body_timeout` seconds (code `body_timeout`; "
    "the connection is closed).",
    "413": "The body is larger than the limit (code `body_too_large`).",
    "417": "An `Expect` header other than `100-continue` (code `unsupported_expectation`). With `Expect: "
    "100-continue`, a request its headers already refuse (404, 413, 415) is answered before its body is "
    "asked for, and the connection is closed.",
    "415": "The body is not `application/json` (code `unsupported_media_type`), or is sent with a "
    "`Content-Encoding` other than `identity` (code `unsupported_content_encoding`): signatures cover the "
    "bytes as sent, so bodies are never decompressed; send them uncompressed.",
    "422": "Valid JSON that lacks what lmsbridge needs; `error.path` names the field (code `invalid_body`).",
    "503": "The event could not be queued (broker down or no confirm in time, code `broker_unavailable`), or "
    "as many bodies as allowed are being read already (code `busy`; the connection is closed); retry after "
    "`Retry-After`.",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _header(name: str, *, required: bool = True, pattern: str | None = None, max_length: int = 1024) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": max_length}
    if pattern is not None:
        schema["pattern"] = pattern
    return {"name": name, "in": "header", "required": required, "schema": schema}


def _headers(source: SourceSettings) -> list[dict[str, Any]]:
    """The signature headers of a source's scheme, as strict as the verifier reads them."""
    if source.signature == "standard-webhooks":
        return [
            _header("webhook-id", pattern=r"^[\x21-\x7e]+$", max_length=255),
            _header("webhook-timestamp", pattern=r"^[0-9]{1,12}$"),
            _header("webhook-signature", pattern=r"^v1a?,[A-Za-z0-9+/=]+( v1a?,[A-Za-z0-9+/=]+)*$"),
        ]
    if source.signature == "stripe":
        return [
            _header(source.signature_header or "Limeplate-Signature", pattern=r"^t=[0-9]{1,12}(,v1=[0-9a-f]{64})+$")
        ]
    headers = [_header("X-Hub-Signature-256", pattern=r"^sha256=[0-9a-fA-F]{64}$")]
    if source.delivery_header:
        headers.append(_header(source.delivery_header, required=False, pattern=r"^[\x21-\x7e]+$", max_length=255))
    return headers


def document(sources: Mapping[str, SourceSettings], *, max_body_bytes: int) -> dict[str, Any]:
    """Build the OpenAPI document for the configured sources."""
    paths: dict[str, Any] = {}
    for name, source in sorted(sources.items()):
        responses: dict[str, Any] = {
            "202": {
                "description": "Accepted: the event is confirmed in RabbitMQ (or an ignored type was acknowledged).",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
            }
        }
        responses.update({code: _error(text) for code, text in _REFUSALS.items()})
        paths[f"/webhooks/{name}"] = {
            "post": {
                "operationId": f"receive_{name.replace('-', '_').replace('.', '_')}",
                "summary": f"Webhook from {source.platform} ({source.signature} signatures)",
                "parameters": _headers(source),
                "requestBody": {
                    "required": True,
                    "description": f"A signed event envelope, at most {max_body_bytes} bytes, sent without "
                    "`Content-Encoding` (the signature covers the bytes as sent; an encoded body is 415).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                },
                "responses": responses,
            }
        }
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "The process is alive",
            "responses": {
                "200": {
                    "description": "alive",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "summary": "Broker connected, database reachable, not shutting down",
            "responses": {
                "200": {
                    "description": "ready",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "503": {
                    "description": "not ready",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "lmsbridge receiver", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Accepted": {
                    "type": "object",
                    "required": ["id", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"type": "string", "enum": ["accepted", "ignored"]},
                    },
                },
                "Envelope": {
                    "type": "object",
                    "required": ["type", "data"],
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"type": "string"},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "data": {"type": "object"},
                    },
                },
            }
        },
    }
