"""TorchServe requests as its handlers see them, built from HTTP requests, and answers back."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from packrat.models.torchserve_request import (
    TorchServeReply,
    build_request,
    error_reply,
    parameter_value,
)
from packrat.server import ts_requests
from packrat.server.errors import BadRequest


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [
        (b'{"a": [1, 2]}', "application/json", {"a": [1, 2]}),
        (b'{"a": [1, 2]}', "Application/JSON; charset=utf-8", {"a": [1, 2]}),
        (b"{not json", "application/json", bytearray(b"{not json")),
        (b"caf\xc3\xa9", "text/plain", "café"),
        (b"\xff\xfe", "text/plain", bytearray(b"\xff\xfe")),
        (b"\xff\xd8\xff", "image/jpeg", bytearray(b"\xff\xd8\xff")),
        (b"x", "", bytearray(b"x")),
    ],
)
def test_values_arrive_as_torchserve_decodes_them(
    data: bytes, content_type: str, expected: object
) -> None:
    value = parameter_value(data, content_type)
    assert value == expected and type(value) is type(expected)


def test_a_later_parameter_wins_and_headers_carry_each_content_type() -> None:
    request = build_request(
        [("body", b"1", "text/plain"), ("k", b"v", ""), ("body", b"2", "text/plain")],
        {"X-Trace": "abc"},
        "id-1",
    )
    assert request.inputs == {"body": "2", "k": bytearray(b"v")}
    assert list(request.inputs) == ["body", "k"]
    assert request.headers == {
        "body": {"content-type": "text/plain"},
        "k": {"content-type": ""},
        "x-trace": "abc",
    }
    assert request.request_id == "id-1"


def _http(body: bytes, content_type: str | None, query: bytes = b"") -> Request:
    headers = [(b"host", b"test")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "method": "POST", "path": "/predictions/m", "headers": headers,
             "query_string": query}  # fmt: skip
    return Request(scope)


def test_a_raw_body_is_the_body_parameter_after_the_query_string() -> None:
    jpeg = b"\xff\xd8\xffdata"
    request = ts_requests.from_http(_http(jpeg, "image/jpeg", b"topk=3"), bytearray(jpeg))
    assert list(request.inputs) == ["topk", "body"]
    assert request.inputs == {"topk": bytearray(b"3"), "body": bytearray(jpeg)}
    assert request.headers["body"] == {"content-type": "image/jpeg"}
    assert request.headers["content-type"] == "image/jpeg"
    assert request.request_id  # a fresh id, as TorchServe's frontend gives each request


def test_a_json_body_arrives_parsed() -> None:
    body = json.dumps({"text": "hello"}).encode()
    request = ts_requests.from_http(_http(body, "application/json"), bytearray(body))
    assert request.inputs == {"body": {"text": "hello"}}


def test_form_fields_arrive_by_name_files_with_their_type() -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="k.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\nJPEG\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    request = ts_requests.from_http(_http(body, content_type), bytearray(body))
    assert request.inputs == {"data": bytearray(b"JPEG"), "note": bytearray(b"hi")}
    assert request.headers["data"] == {"content-type": "image/jpeg"}
    assert request.headers["note"] == {"content-type": ""}


def test_url_encoded_forms_are_fields_too() -> None:
    body = b"a=1&b=two+words"
    content_type = "application/x-www-form-urlencoded"
    request = ts_requests.from_http(_http(body, content_type), bytearray(body))
    assert request.inputs == {"a": bytearray(b"1"), "b": bytearray(b"two words")}


def test_a_malformed_form_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="boundary"):
        ts_requests.from_http(_http(b"x", "multipart/form-data"), bytearray(b"x"))


def test_the_answer_keeps_the_handlers_status_type_and_headers() -> None:
    reply = TorchServeReply(b"{}", "application/json", 202, "Accepted", {"x-model": "m"})
    response = ts_requests.to_response(reply)
    assert (response.status_code, response.body) == (202, b"{}")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-model"] == "m"
    assert "content-type" not in ts_requests.to_response(TorchServeReply(b"x")).headers


def test_an_error_is_written_byte_for_byte_as_torchserve_writes_it() -> None:
    # What TorchServe 0.12 sent for PredictionException(message, 400): Gson's pretty JSON,
    # non-ASCII as UTF-8, HTML characters as they are, control characters and U+2028 escaped.
    message = "<a href='x'>&= \"q\" é\n\t\u2028 \x01 /"
    reply = error_reply(400, message)
    assert reply.body == (
        b'{\n  "code": 400,\n  "type": "InternalServerException",\n'
        b'  "message": "<a href=\'x\'>&= \\"q\\" \xc3\xa9\\n\\t\\u2028 \\u0001 /"\n}\n'
    )
    assert (reply.status, reply.content_type) == (400, "application/json")
    assert json.loads(reply.body)["message"] == message
