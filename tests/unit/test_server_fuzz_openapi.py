"""Schemathesis fuzzes every documented operation of both apps from their OpenAPI specs.

Each operation gets generated requests, valid and invalid, and the replies are checked against
the spec: no 5xx, documented status codes and bodies, exact `Allow` headers on 405, valid data
accepted. The models are fakes (`server_fakes`), so this is about the HTTP layer; the payload
decoders are fuzzed with hypothesis in test_server_codecs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from packrat.server.http_config import HttpConfig
from packrat.server.http_inference import create_inference_app
from packrat.server.http_management import create_management_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FakeModel, FakeRepository  # noqa: E402

EXAMPLES = 40  # per operation

REPO = FakeRepository(FakeModel("double", "1.0"), FakeModel("bert", "1"))
HTTP = HttpConfig(max_body_bytes=64 * 1024)
inference = schemathesis.openapi.from_asgi("/openapi.json", create_inference_app(REPO, HTTP))
management = schemathesis.openapi.from_asgi("/openapi.json", create_management_app(REPO, HTTP))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@inference.parametrize()
@FUZZ
def test_inference_api(case: Any) -> None:
    case.call_and_validate()


@management.parametrize()
@FUZZ
def test_management_api(case: Any) -> None:
    case.call_and_validate()
