"""OpenAPI: the example's and a real-schema corpus's documents validate; the document the
bridge serves matches its routes, and schemathesis finds no server error and no response
that breaks it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from examples.streams.v1.streams_rpckit import StreamsService
from rpckit.codegen.protoc import bundled_include_paths
from rpckit.interceptors.access_log import AccessLog
from rpckit.interceptors.auth import ApiKeyAuth, BearerAuth, static_tokens
from rpckit.tools.openapi import document, document_from_protos
from rpckit.v1.durable_rpckit import DurableStreamsService
from tests.serving.process import Served
from tests.support import ROOT

pytestmark = pytest.mark.process

SITE = bundled_include_paths()[0]
HOSTILE = ROOT / "tests" / "codegen" / "protos"
SHAPES = """
syntax = "proto3";
package shapes.v1;
import "google/api/annotations.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
service Library {
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = {get: "/v1/{name=shelves/*/books/*}"};
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = {patch: "/v1/{book.name=shelves/*/books/*}" body: "book"};
  }
  rpc Titles(GetBookRequest) returns (stream Book) {
    option (google.api.http) = {get: "/v1/titles" response_body: "title"
      additional_bindings {post: "/v1/titles:search" body: "*"}};
  }
}
enum Kind { KIND_UNSPECIFIED = 0; NOVEL = 1; }
message Book {
  string name = 1; string title = 2; int64 pages = 3; Kind kind = 4; bytes cover = 5;
  google.protobuf.Timestamp published = 6; google.protobuf.Duration read_time = 7;
  map<string, int32> ratings = 8; repeated Book sequels = 9; google.protobuf.Struct extra = 10;
  oneof price { double euros = 11; string note = 12; }
  google.protobuf.Int64Value copies = 13; google.protobuf.Value anything = 14;
}
message GetBookRequest { string name = 1; google.protobuf.FieldMask read_mask = 2; }
message UpdateBookRequest { Book book = 1; google.protobuf.FieldMask update_mask = 2; }
"""



#: What ``rpckit serve`` of the example (and ``rpckit openapi`` of protos/) describes: the
#: example's methods and rpckit's own DurableStreamsService (served with @durable methods).
SERVED = (*StreamsService.spec().methods, *DurableStreamsService.spec().methods)

def test_example_document_validates_and_lists_every_route() -> None:
    spec = document(StreamsService.spec().methods, title="streams")
    validate(spec)
    routes = {
        (rule.method.lower(), rule.path)
        for method in StreamsService.spec().methods
        for rule in method.http
    }
    assert {(verb, path) for path, ops in spec["paths"].items() for verb in ops} == routes
    sse = spec["paths"]["/api/json_stream"]["get"]["responses"]["200"]["content"]
    assert {"application/x-ndjson", "application/jsonl", "text/event-stream"} <= set(sse)
    dog_ref = {"$ref": "#/components/schemas/examples.streams.v1.Dog"}
    assert dog_ref in sse["application/jsonl"]["itemSchema"]["anyOf"]  # OpenAPI 3.2
    events = sse["text/event-stream"]["itemSchema"]["oneOf"]
    assert events[0]["properties"]["data"]["contentSchema"] == dog_ref
    assert [e["properties"]["event"].get("const") for e in events] == [None, "error", "end"]
    older = document(StreamsService.spec().methods, openapi="3.1.1")
    validate(older)  # for 3.1-only tools (Swagger UI 5): itemSchema as x-itemSchema
    assert "x-itemSchema" in json.dumps(older)
    assert '"itemSchema":' not in json.dumps(older)
    text = spec["paths"]["/api/test_stream"]["get"]["responses"]["200"]["content"]
    assert list(text) == ["text/plain; charset=utf-8"]
    files = spec["paths"]["/api/files/{name}"]["get"]["responses"]
    assert {"Content-Disposition", "X-Content-Size", "Accept-Ranges"} <= set(
        files["200"]["headers"]
    )
    assert "206" in files
    assert "416" in files
    dog = spec["components"]["schemas"]["examples.streams.v1.Dog"]
    assert dog["properties"]["age"]["type"] == "integer"


def test_corpus_documents_validate(tmp_path: Path) -> None:
    ops = tmp_path / "google" / "longrunning" / "operations.proto"
    ops.parent.mkdir(parents=True)
    ops.write_text((SITE / "google/longrunning/operations_proto.proto").read_text())
    (tmp_path / "shapes.proto").write_text(SHAPES)
    spec = document_from_protos([tmp_path], ["google/longrunning/operations.proto"])
    validate(spec)
    assert {"/v1/operations", "/v1/operations/{name}", "/v1/operations/{name}:cancel"} <= set(
        spec["paths"]
    )
    shapes = document_from_protos([tmp_path], ["shapes.proto"])
    validate(shapes)
    book: dict[str, Any] = shapes["components"]["schemas"]["shapes.v1.Book"]["properties"]
    assert book["pages"]["type"] == ["string", "integer"]  # int64 is a string in JSON
    assert book["published"] == {"type": "string", "format": "date-time"}
    assert book["ratings"]["additionalProperties"]["type"] == "integer"
    assert book["kind"] == {"$ref": "#/components/schemas/shapes.v1.Kind"}
    assert book["readTime"]["type"] == "string"
    assert "shelves/{name_1}/books/{name_2}" in " ".join(shapes["paths"])
    update = shapes["paths"]["/v1/shelves/{book.name_1}/books/{book.name_2}"]["patch"]
    assert update["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("Book")
    assert [p["name"] for p in update["parameters"] if p["in"] == "query"] == ["updateMask"]
    hostile = sorted(
        p.relative_to(HOSTILE).as_posix()
        for p in HOSTILE.rglob("*.proto")
        if not p.relative_to(HOSTILE).as_posix().startswith("grpc/")
    )
    validate(document_from_protos([HOSTILE], hostile))


def test_rpckit_openapi_command(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    done = subprocess.run(
        [sys.executable, "-m", "rpckit", "openapi", "-o", str(out), "--title", "streams"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["paths"] == document(SERVED)["paths"]
    bad = subprocess.run(
        [sys.executable, "-m", "rpckit", "openapi", "-I", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.startswith("rpckit openapi: no .proto files")


def test_served_document_and_schemathesis(example: dict[str, str], tmp_path: Path) -> None:
    url = example["http"]
    served = httpx.get(f"{url}/docs/openapi.json", timeout=10).json()
    validate(served)
    assert served["paths"] == document(SERVED)["paths"]
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis is not None
    # TextStream never ends, JsonStream and Complete sleep intervalMs (any uint32) between
    # items: they would only test the client's patience; every other route is exercised.
    done = subprocess.run(
        [
            schemathesis, "run", f"{url}/docs/openapi.json", "--checks", "all",
            "--max-examples", "25", "--request-timeout", "10", "--workers", "2",
            "--exclude-path", "/api/test_stream", "--exclude-path", "/api/json_stream",
            "--exclude-path", "/api/complete", "--generation-deterministic", "--no-color",
            "--exclude-checks", "unsupported_method,ignored_auth,positive_data_acceptance",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.tools.schemathesis_hooks",
             "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Tested: 8" in done.stdout  # the example's 7 and CancelStream


@pytest.mark.parametrize("path", ["/docs", "/docs/ui/swagger-ui-bundle.js"])
def test_docs_paths(example: dict[str, str], path: str) -> None:
    response = httpx.get(example["http"] + path, timeout=10)
    assert response.status_code == 200
    assert len(response.content) > 1000


UPLOAD = "examples.streams.v1.StreamsService/UploadAsByteStream"
VERIFY = static_tokens({"t": "someone"})


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for ops in spec["paths"].values() for op in ops.values()}


def test_auth_interceptors_declare_their_security_schemes() -> None:
    methods = StreamsService.spec().methods
    bearer = BearerAuth(VERIFY, methods=[UPLOAD])
    key = ApiKeyAuth(
        VERIFY, cookie="session", query="api_key", methods=lambda m: m.name == "ListFiles"
    )
    spec = document(methods, interceptors=[AccessLog(), bearer, key])
    validate(spec)
    assert spec["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"},
        "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        "apiKeyCookie": {"type": "apiKey", "in": "cookie", "name": "session"},
        "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    }
    ops = _operations(spec)
    upload = ops["examples.streams.v1.StreamsService.UploadAsByteStream"]
    assert upload["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(upload["responses"])
    listing = ops["examples.streams.v1.StreamsService.ListFiles"]
    assert listing["security"] == [{"apiKeyAuth": []}, {"apiKeyCookie": []}, {"apiKeyQuery": []}]
    unguarded = [op for op in ops.values() if op is not upload and op is not listing]
    assert len(unguarded) == len(ops) - 2
    assert all("security" not in op and "401" not in op["responses"] for op in unguarded)
    assert "securitySchemes" not in document(methods, interceptors=[AccessLog()])["components"]


def test_two_guards_of_one_method_are_both_required() -> None:
    methods = StreamsService.spec().methods
    spec = document(
        methods,
        interceptors=[
            BearerAuth(VERIFY, cookie="token"),
            BearerAuth(VERIFY, header="x-token", scheme="Token", methods=[UPLOAD]),
        ],
    )
    validate(spec)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert schemes["bearerAuth2"] == {
        "type": "apiKey", "in": "header", "name": "x-token",
        "description": "the header's value is `Token <token>`",
    }  # fmt: skip
    ops = _operations(spec)
    assert ops["examples.streams.v1.StreamsService.UploadAsByteStream"]["security"] == [
        {"bearerAuth": [], "bearerAuth2": []},
        {"bearerCookie": [], "bearerAuth2": []},
    ]
    assert ops["examples.streams.v1.StreamsService.ListFiles"]["security"] == [
        {"bearerAuth": []},
        {"bearerCookie": []},
    ]


def test_served_document_declares_the_served_interceptors() -> None:
    with Served(
        "examples.streams.server:create_service", "--grpc", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--docs", "--no-access-log",
        "--interceptor", "examples.streams.server:upload_auth",
    ) as served:  # fmt: skip
        port = served.ports(("gRPC", "HTTP"))["HTTP"]
        spec = httpx.get(f"http://127.0.0.1:{port}/docs/openapi.json", timeout=10).json()
    validate(spec)
    assert spec["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}
    }
    guarded = {
        name for name, op in _operations(spec).items() if op.get("security") == [{"bearerAuth": []}]
    }
    assert guarded == {"examples.streams.v1.StreamsService.UploadAsByteStream"}
