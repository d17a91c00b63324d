"""`packrat serve --backend`: the choice at start-up, in describe and in /metrics, and answers
that match torch's; a lossy precision only within the error budget."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from packrat.models import ZooSource

from .server import packrat_serve

pytestmark = pytest.mark.slow

SHAPE = (3, 32, 32)  # tiny-resnet's per-request input


def _predict(url: str, x: np.ndarray) -> np.ndarray:
    r = httpx.post(
        url + "/predictions/tiny-resnet",
        content=x.tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    return np.array(r.json())


def test_auto_chooses_says_why_everywhere_and_answers_as_torch(tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    want = np.asarray(ZooSource("tiny-resnet").load().handle([torch.from_numpy(x)])[0])
    args = ("tiny-resnet", "--max-batch-size", "4", "--backend", "auto", "--precision", "fp32")
    with packrat_serve(*args, workdir=tmp_path) as server:
        (described,) = httpx.get(server.management + "/models/tiny-resnet").json()
        backend = described["backend"]
        chosen = f"{backend['backend']} {backend['precision']}"
        assert backend["precision"] == "fp32"  # --precision fp32: exact kernels only
        assert backend["candidates"][chosen] == "chosen"
        assert {"torch fp32", "onnxruntime fp32", "openvino fp32"} <= set(backend["candidates"])
        assert backend["reason"].startswith(f"{chosen}: the fastest accurate candidate")
        assert f"backend {backend['reason']}" in server.output  # at start-up
        for candidate in ("onnxruntime fp32", "openvino fp32"):
            assert backend["accuracy"][candidate]["within_budget"]
        metrics = httpx.get(server.metrics + "/metrics").text
        assert (
            f'packrat_backend{{backend="{backend["backend"]}",model="tiny-resnet",'
            'precision="fp32"} 1.0' in metrics
        )
        assert 'candidate="onnxruntime fp32",measure="min_cosine"' in metrics
        np.testing.assert_allclose(_predict(server.inference, x), want, rtol=1e-3, atol=1e-4)


def test_a_named_backend_serves_on_it(tmp_path: Path) -> None:
    x = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)
    want = np.asarray(ZooSource("tiny-resnet").load().handle([torch.from_numpy(x)])[0])
    args = ("tiny-resnet", "--max-batch-size", "4", "--backend", "openvino", "--precision", "bf16")
    with packrat_serve(*args, workdir=tmp_path) as server:
        (described,) = httpx.get(server.management + "/models/tiny-resnet").json()
        assert described["backend"]["reason"] == "openvino bf16: as asked"
        assert described["backend"]["accuracy"]["openvino bf16"]["within_budget"]
        got = _predict(server.inference, x)
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        assert cosine > 0.99  # bf16: close, not equal
