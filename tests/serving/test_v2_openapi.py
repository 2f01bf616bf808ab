"""The OpenAPI of `POST /v2/models/{name}[/versions/{v}]/infer` declares the Open Inference
Protocol request (not a bare object) and tells the truth about it: what the schema
refuses, the server refuses, and where the server accepts unknown fields the schema does
not claim `additionalProperties: false` (and the other way round)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest
from tests.conftest import Service
from tests.serving.test_v2 import infer_body

pytestmark = pytest.mark.asyncio
INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
ACCEPTED_DATATYPES = ("FP32", "FP64", "INT64")


async def _infer_operations(svc: Service) -> list[dict[str, Any]]:
    spec = (await svc.client.get("/openapi.json")).json()
    return [spec["paths"][path]["post"] for path in INFER_PATHS]


def _request_schema(op: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = op["requestBody"]["content"]["application/json"]["schema"]
    return schema


async def test_infer_request_schema_is_the_protocols(svc: Service) -> None:
    for op in await _infer_operations(svc):
        content = op["requestBody"]["content"]
        # The binary tensor extension stays documented next to JSON.
        assert content["application/octet-stream"]["schema"]["format"] == "binary"
        headers = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        assert "Inference-Header-Content-Length" in headers
        schema = _request_schema(op)
        assert schema["type"] == "object"
        assert schema["required"] == ["inputs"]
        assert {"id", "parameters", "inputs", "outputs"} <= set(schema["properties"])
        tensor = schema["properties"]["inputs"]["items"]
        assert set(tensor["required"]) == {"name", "shape", "datatype"}
        assert {"name", "shape", "datatype", "parameters", "data"} <= set(tensor["properties"])
        enum = tensor["properties"]["datatype"]["enum"]
        assert {"BOOL", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"} <= set(enum)
        assert tensor["properties"]["shape"]["items"]["type"] == "integer"
        output = schema["properties"]["outputs"]["items"]
        assert output["required"] == ["name"]
        assert {"name", "parameters"} <= set(output["properties"])
        # The documented example is a valid request by the documented schema.
        example = content["application/json"]["example"]
        assert jsonschema_rs.validator_for(schema).is_valid(example)


async def test_documented_example_is_served(svc: Service) -> None:
    op = (await _infer_operations(svc))[0]
    example = op["requestBody"]["content"]["application/json"]["example"]
    headers = await svc.admin_headers()
    response = await svc.client.post("/v2/models/iris/infer", json=example, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == example["id"]


def _with_unknown(level: str) -> dict[str, Any]:
    body = infer_body(outputs=[{"name": "label", "parameters": {"binary_data": False}}])
    body["parameters"] = {"binary_data_output": False}
    body["inputs"][0]["parameters"] = {}
    target = {
        "request": body,
        "input": body["inputs"][0],
        "output": body["outputs"][0],
        "parameters": body["parameters"],
    }[level]
    target["mlgate_unknown_field"] = 1
    return body


def _node(schema: dict[str, Any], level: str) -> dict[str, Any]:
    props = schema["properties"]
    node: dict[str, Any] = {
        "request": schema,
        "input": props["inputs"]["items"],
        "output": props["outputs"]["items"],
        "parameters": props["parameters"],
    }[level]
    return node


@pytest.mark.parametrize("level", ["request", "input", "output", "parameters"])
async def test_additional_properties_match_the_server(svc: Service, level: str) -> None:
    """An unknown field is refused (422) exactly where the schema says
    `additionalProperties: false`, and accepted (200) where it does not."""
    schema = _request_schema((await _infer_operations(svc))[0])
    body = _with_unknown(level)
    headers = await svc.admin_headers()
    response = await svc.client.post("/v2/models/iris/infer", json=body, headers=headers)
    assert response.status_code in (200, 422), response.text
    closed = _node(schema, level).get("additionalProperties") is False
    refused = response.status_code == 422
    assert closed == refused, (
        f"{level}: server answered {response.status_code} to an unknown field, "
        f"schema additionalProperties={_node(schema, level).get('additionalProperties')!r}"
    )
    valid = jsonschema_rs.validator_for(schema).is_valid(body)
    assert valid != refused


@pytest.mark.parametrize("datatype", ACCEPTED_DATATYPES)
async def test_every_served_datatype_is_documented(svc: Service, datatype: str) -> None:
    schema = _request_schema((await _infer_operations(svc))[0])
    assert datatype in schema["properties"]["inputs"]["items"]["properties"]["datatype"]["enum"]
    data = [5, 3, 1, 0, 6, 3, 5, 2] if datatype == "INT64" else None
    body = infer_body(data=data, datatype=datatype)
    assert jsonschema_rs.validator_for(schema).is_valid(body)
    headers = await svc.admin_headers()
    response = await svc.client.post("/v2/models/iris/infer", json=body, headers=headers)
    assert response.status_code == 200, response.text


def _mutations() -> list[tuple[str, dict[str, Any]]]:
    base = infer_body()
    cases = []
    edits: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
        ("no inputs", lambda b: b.pop("inputs")),
        ("two inputs", lambda b: b["inputs"].append(copy.deepcopy(b["inputs"][0]))),
        ("no datatype", lambda b: b["inputs"][0].pop("datatype")),
        ("unknown datatype", lambda b: b["inputs"][0].update(datatype="FP128")),
        ("shape not integers", lambda b: b["inputs"][0].update(shape=["2", "4"])),
        ("inputs not a list", lambda b: b.update(inputs={"name": "input"})),
        ("outputs not a list", lambda b: b.update(outputs={"name": "label"})),
        (
            "output parameters not an object",
            lambda b: b.update(outputs=[{"name": "label", "parameters": [1]}]),
        ),
    )
    for label, edit in edits:
        body = copy.deepcopy(base)
        edit(body)
        cases.append((label, body))
    return cases


@pytest.mark.parametrize(("label", "body"), _mutations(), ids=[m[0] for m in _mutations()])
async def test_what_the_schema_refuses_the_server_refuses(
    svc: Service, label: str, body: dict[str, Any]
) -> None:
    schema = _request_schema((await _infer_operations(svc))[0])
    assert not jsonschema_rs.validator_for(schema).is_valid(body), label
    headers = await svc.admin_headers()
    response = await svc.client.post("/v2/models/iris/infer", json=body, headers=headers)
    assert response.status_code == 422, (label, response.status_code, response.text)
