"""TorchServe requests from HTTP, and TorchServe answers back to HTTP, for archive models.

A request becomes the parameters TorchServe's frontend would hand the handler
(`packrat.models.torchserve_request`): the query string's, then a form's fields (multipart or
url-encoded) or else the body under `body`, each with its content type; the request's headers
go along. The answer is the handler's bytes with the status, content type and headers it set.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from packrat.models.torchserve_request import TorchServeReply, TorchServeRequest, build_request
from packrat.server import multipart

_FORM_TYPE = "application/x-www-form-urlencoded"

Parameter = tuple[str, bytes | bytearray, str]


def from_http(request: Request, body: bytearray) -> TorchServeRequest:
    """The request as TorchServe's handler would see it (raises BadRequest for a malformed
    multipart body)."""
    parameters: list[Parameter] = [
        (name, value.encode("utf-8"), "") for name, value in request.query_params.multi_items()
    ]
    content_type = request.headers.get("content-type") or ""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if multipart.is_multipart(content_type):
        for part in multipart.parse_form(content_type, body):
            part_type = part.content_type if part.filename is not None else None
            parameters.append((part.name, part.data, _media_type(part_type)))
    elif media_type == _FORM_TYPE:
        text = bytes(body).decode("utf-8", "replace")
        fields = parse_qsl(text, keep_blank_values=True)
        parameters += [(name, value.encode("utf-8"), "") for name, value in fields]
    else:
        parameters.append(("body", body, media_type))
    return build_request(parameters, request.headers, str(uuid.uuid4()))


def to_response(reply: TorchServeReply) -> Response:
    """The handler's answer: its bytes, status, content type and headers."""
    response = Response(reply.body, status_code=reply.status, media_type=reply.content_type)
    for key, value in reply.headers.items():
        response.headers[key] = str(value)
    return response


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
