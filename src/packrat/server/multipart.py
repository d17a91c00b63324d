"""multipart/form-data bodies (`curl -F data=@kitten.jpg`), parsed with python-multipart.

TorchServe accepts a form and hands each field to the handler under its name. For Packrat's
tensor models one field is the input: the one named `data`, else `body`, else the first file
field, else the first field; its bytes are then decoded as if they were the whole body, with
the part's own Content-Type. python-multipart is the parser Starlette uses, so it is already
there wherever the server runs; nothing here parses the wire format by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from packrat.server.errors import BadRequest

INPUT_FIELDS = ("data", "body")


class MultipartError(BadRequest):
    """A multipart body that cannot be parsed or has no field (HTTP 400)."""


@dataclass
class FormPart:
    """One field of a form: its name, file name (None for a plain field), type and bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


def is_multipart(content_type: str | None) -> bool:
    """Whether a Content-Type header announces a multipart/form-data body."""
    if not content_type:
        return False
    media_type, _ = parse_options_header(content_type)
    return media_type.lower() == b"multipart/form-data"


def parse_form(content_type: str, body: bytes | bytearray) -> list[FormPart]:
    """The form's fields, in body order; MultipartError if it has no boundary or is malformed."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MultipartError(
            "multipart/form-data body without a boundary in its Content-Type; let the client "
            "(curl -F, requests files=) set the header"
        )
    parts: list[FormPart] = []
    headers: dict[bytes, bytes] = {}
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        part_type = headers.get(b"content-type")
        parts.append(
            FormPart(
                name=disposition.get(b"name", b"").decode("utf-8", "replace"),
                filename=None if filename is None else filename.decode("utf-8", "replace"),
                content_type=None if part_type is None else part_type.decode("latin-1"),
            )
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(bytes(body))
        parser.finalize()
    except Exception as error:  # python-multipart raises its own tree and ValueError
        raise MultipartError(f"malformed multipart/form-data body: {error}") from error
    if not parts:
        raise MultipartError("multipart/form-data body has no field; send one named 'data'")
    return parts


def input_part(parts: list[FormPart]) -> FormPart:
    """The field a tensor model reads: `data`, else `body`, else the first file, else the first."""
    for name in INPUT_FIELDS:
        for part in parts:
            if part.name == name:
                return part
    files = [part for part in parts if part.filename is not None]
    return files[0] if files else parts[0]
