"""One TorchServe request and its reply, as they cross from the HTTP edge to a worker and back.

A TorchServe handler's `handle(data, context)` receives, for each request of its batch, a dict
of the request's *parameters* by name, built the way TorchServe's frontend and Python backend
build it (frontend `InferenceRequestHandler.parseRequest`, backend
`otf_message_handler._retrieve_input_data`):

- each query-string parameter, as bytes;
- a multipart or url-encoded form: each field under its name (`curl -F data=@kitten.jpg`
  gives `data`), with the part's content type;
- any other body: `body`, with the request's content type.

A value whose content type is `application/json` arrives parsed (bytes if it is not valid
JSON), `text/*` as a str, anything else as a bytearray. The handler can also read the request
headers and each parameter's content type through `context.get_request_header(idx, key)`.

The reply is what TorchServe's backend writes for one request (`create_predict_response`):
bytes as they are, a str as UTF-8, a torch.Tensor as `torch.save` writes it, anything else as
`json.dumps(value, indent=2)`, with the status, content type and headers the handler set on
its context. When the handler fails, every request of its batch gets TorchServe's error answer
instead (`error_reply`). Both types are plain picklable values; nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class TorchServeRequest:
    """One request as a TorchServe handler sees it.

    inputs: parameter name -> value (see the module docstring), in arrival order.
    headers: what `context.get_request_header` reads: the HTTP request's headers by lower-case
        name, and for each parameter `{name: {"content-type": type}}`, as TorchServe's backend
        builds them.
    request_id: the id `context.get_request_id(idx)` returns.
    """

    inputs: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""


@dataclass(frozen=True)
class TorchServeReply:
    """What TorchServe answers one request with: status, body bytes, content type and the
    response headers the handler set (content type excluded)."""

    body: bytes
    content_type: str | None = None
    status: int = 200
    phrase: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def error_reply(status: int, message: str) -> TorchServeReply:
    """TorchServe's answer to a request whose batch failed with `status` and `message`: the
    JSON error its frontend writes, `{"code", "type": "InternalServerException", "message"}`,
    pretty-printed by Gson, with a final newline (as TorchServe 0.12 sends it, byte for byte)."""
    error = {"code": status, "type": "InternalServerException", "message": message}
    text = json.dumps(error, indent=2, ensure_ascii=False)
    # Gson writes non-ASCII as UTF-8 but escapes the two line separators, which json.dumps
    # leaves raw (JavaScript source cannot hold them inside a string).
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return TorchServeReply((text + "\n").encode("utf-8"), JSON_TYPE, status)


def parameter_value(data: bytes | bytearray, content_type: str) -> Any:
    """A parameter's value as TorchServe's backend hands it over: parsed JSON for
    `application/json`, a str for `text/*`, else a bytearray (also when the JSON or text does
    not decode)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == JSON_TYPE:
        try:
            return json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return bytearray(data)
    if media_type.startswith("text"):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return bytearray(data)
    return bytearray(data)


def build_request(
    parameters: Iterable[tuple[str, bytes | bytearray, str]],
    http_headers: Mapping[str, str],
    request_id: str = "",
) -> TorchServeRequest:
    """A request from its parameters, each (name, bytes, content type; "" if none), in the
    order TorchServe adds them (query string first, then the form fields or the body), and the
    HTTP request's headers. A later parameter of the same name wins, as in TorchServe."""
    inputs: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    for name, data, content_type in parameters:
        inputs[name] = parameter_value(data, content_type)
        headers[name] = {"content-type": content_type}
    for key, value in http_headers.items():
        headers[key.lower()] = value
    return TorchServeRequest(inputs, headers, request_id)
