"""The OpenAPI document describes every answer, success and error alike."""

from __future__ import annotations

from typing import Any

from tests.agent.conftest import Agent

ROUTES = {
    ("get", "/v1/status"),
    ("post", "/v1/pair"),
    ("post", "/v1/pair/claim"),
    ("get", "/v1/card"),
    ("get", "/v1/card/certificates"),
    ("get", "/v1/card/driver"),
    ("get", "/v1/card/identify"),
    ("get", "/v1/pin"),
    ("post", "/v1/pin/verify"),
    ("post", "/v1/pin/change"),
    ("post", "/v1/sign"),
    ("post", "/v1/session/end"),
}


def _schema_of(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        resolved: dict[str, Any] = document["components"]["schemas"][name]
        return resolved
    return schema


def test_every_route_documents_its_answers(agent: Agent) -> None:
    with agent.client(origin=None) as c:
        document = c.get("/v1/openapi.json").json()
    paths = document["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item}
    assert documented == ROUTES
    for method, path in ROUTES:
        responses = paths[path][method]["responses"]
        success = next(r for status, r in responses.items() if status.startswith("2"))
        schema = _schema_of(document, success)
        assert schema.get("properties"), f"{method} {path}: the answer has no schema"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert _schema_of(document, response)["title"] == "ErrorAnswer", (path, status)


def test_the_sign_answer_names_its_fields_and_the_error_codes(agent: Agent) -> None:
    with agent.client(origin=None) as c:
        document = c.get("/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert set(schemas["SignAnswer"]["required"]) == {
        "signature",
        "signature_format",
        "algorithm",
        "digest",
        "certificate_number",
        "audit_id",
    }
    codes = set(schemas["ErrorCode"]["enum"])
    assert {"session_required", "pin_incorrect", "audit_unavailable"} <= codes
