"""Triton's own HTTP client against a real uvicorn server running the inference app."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from packrat.models.inputs import InputSpec
from packrat.server.http_inference import create_inference_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FAIL_MARKER, FakeModel, FakeRepository, running_server  # noqa: E402

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def client() -> Iterator[httpclient.InferenceServerClient]:
    repo = FakeRepository(
        FakeModel("double", "1", InputSpec((4,), "float32")),
        FakeModel("tokens", "1", InputSpec((3,), "int64", high=100)),
    )
    with running_server(create_inference_app(repo)) as address:
        triton = httpclient.InferenceServerClient(url=address)
        try:
            yield triton
        finally:
            triton.close()


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("double")
    assert client.get_server_metadata()["name"] == "packrat"
    meta = client.get_model_metadata("double")
    assert meta["inputs"] == [{"name": "input0", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.get_model_metadata("double", model_version="1")["versions"] == ["1"]


@pytest.mark.parametrize("binary_data", [True, False])
def test_infer_doubles_a_batch(client: httpclient.InferenceServerClient, binary_data: bool) -> None:
    batch = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = httpclient.InferInput("input0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary_data)
    result = client.infer("double", [tensor], request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    np.testing.assert_array_equal(result.as_numpy("output0"), batch * 2)


def test_infer_with_requested_json_output(client: httpclient.InferenceServerClient) -> None:
    ids = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    tensor = httpclient.InferInput("ids", [2, 3], "INT64")
    tensor.set_data_from_numpy(ids)
    output = httpclient.InferRequestedOutput("output0", binary_data=False)
    result = client.infer("tokens", [tensor], outputs=[output], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("output0"), ids)


def test_errors_reach_the_client(client: httpclient.InferenceServerClient) -> None:
    batch = np.array([[FAIL_MARKER, 0, 0, 0]], dtype=np.float32)
    tensor = httpclient.InferInput("input0", [1, 4], "FP32")
    tensor.set_data_from_numpy(batch)
    with pytest.raises(InferenceServerException, match="fake model failed"):
        client.infer("double", [tensor])
    with pytest.raises(InferenceServerException, match="nope"):
        client.get_model_metadata("nope")
