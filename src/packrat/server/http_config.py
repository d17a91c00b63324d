"""The HTTP apps' configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from packrat.server.http_auth import check_token

MiB = 1024 * 1024


@dataclass(frozen=True)
class HttpConfig:
    """Limits the inference and management apps enforce on every request.

    max_body_bytes: largest request body accepted, in bytes (default 16 MiB). A larger
        Content-Length is refused with 413 before the body is read, and a body without one is
        refused as soon as the bytes received pass the limit.
    max_image_pixels: largest image accepted, in pixels (width x height, default 40 million);
        checked from the image header before decoding, so a decompression bomb costs nothing.
    inline_decode_bytes: bodies up to this many bytes that need parsing (JSON, text) are decoded
        on the event loop; larger ones, and every image, are decoded in a worker thread so one
        slow decode does not stall other requests. Raw tensor bytes are always decoded inline:
        they are wrapped, not parsed.
    max_infer_rows: most requests (rows of the batch dimension) one v2 infer call may hold;
        each becomes a task waiting in the model's queue.
    inline_encode_values: outputs of up to this many values are encoded to JSON on the event
        loop; larger ones (BERT's [128, 768] hidden states) in a worker thread.
    token: when set, both apps require `Authorization: Bearer <token>` (`http_auth`).
    max_in_flight: most inference requests in progress at once; more get 503 with
        Retry-After at once (`http_admission`), so a flood cannot grow latency without bound
        even when the HTTP front end, not a model, is the bottleneck.
    """

    max_body_bytes: int = 16 * MiB
    max_image_pixels: int = 40_000_000
    max_infer_rows: int = 4096
    inline_decode_bytes: int = 64 * 1024
    inline_encode_values: int = 16 * 1024
    max_in_flight: int = 256
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        for name in (
            "max_body_bytes",
            "max_image_pixels",
            "max_infer_rows",
            "inline_decode_bytes",
            "inline_encode_values",
            "max_in_flight",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"HttpConfig.{name} must be an integer > 0, got {value!r}")
