"""The built-in model zoo: well-known architectures with seeded random weights, built offline.

Each entry names a builder in `packrat.models.hf_modules`, the keyword arguments of its
`transformers` config, and its per-request input spec. Latency does not depend on the weights'
values, so random weights (seeded, hence reproducible) stand in for pretrained ones and nothing
is ever downloaded. The tiny entries exist for fast tests.

Listing the zoo and computing identities imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from packrat.errors import ModelError
from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.identity import json_sha256
from packrat.models.inputs import InputSpec

# Graph-mode zoo models are traced on a batch of this many requests; a batch of 1 invites
# size-1 special cases (broadcasts, squeezes) that would be baked into the graph.
TRACE_BATCH_SIZE = 2


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    builder: name of a function in `packrat.models.hf_modules` taking `config`; a name rather
        than the function so the zoo can be listed without importing torch.
    config: JSON-serializable keyword arguments of the model's `transformers` config class.
    """

    name: str
    description: str
    builder: str
    input_spec: InputSpec
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)


_IMAGE_224 = InputSpec((3, 224, 224), "float32")
_TINY_IMAGE = InputSpec((3, 32, 32), "float32")

ZOO: Mapping[str, ZooEntry] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            ZooEntry(
                "resnet50",
                "ResNet-50 image classifier, 25.6M params: float32 [3,224,224] -> 1000 logits",
                "resnet_classifier",
                _IMAGE_224,
                {"num_labels": 1000},  # ResNetConfig's defaults are ResNet-50 with 2 labels
            ),
            ZooEntry(
                "bert-base",
                "BERT-base encoder, 109M params: int64 token ids [128] -> hidden states [128,768]",
                "bert_encoder",
                InputSpec((128,), "int64", low=0, high=30522),
                {},  # BertConfig's defaults are bert-base-uncased
            ),
            ZooEntry(
                "gpt2",
                "GPT-2 decoder, 124M params: int64 token ids [128] -> hidden states [128,768]",
                "gpt2_decoder",
                InputSpec((128,), "int64", low=0, high=50257),
                {"use_cache": False},  # one forward pass per request, no KV cache
            ),
            ZooEntry(
                "mobilenet-v2",
                "MobileNetV2 image classifier, 3.5M params: float32 [3,224,224] -> 1000 logits",
                "mobilenet_v2_classifier",
                _IMAGE_224,
                {"num_labels": 1000},
            ),
            ZooEntry(
                "tiny-resnet",
                "2-stage ResNet for tests, 22K params: float32 [3,32,32] -> 10 logits",
                "resnet_classifier",
                _TINY_IMAGE,
                {
                    "num_labels": 10,
                    "embedding_size": 16,
                    "hidden_sizes": [16, 32],
                    "depths": [1, 1],
                    "layer_type": "basic",
                },
            ),
            ZooEntry(
                "tiny-bert",
                "2-layer BERT for tests, 0.14M params: int64 token ids [16] -> hidden [16,64]",
                "bert_encoder",
                InputSpec((16,), "int64", low=0, high=1000),
                {
                    "vocab_size": 1000,
                    "hidden_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "intermediate_size": 128,
                    "max_position_embeddings": 64,
                },
            ),
            ZooEntry(
                "tiny-gpt2",
                "2-layer GPT-2 for tests, 0.17M params: int64 token ids [16] -> hidden [16,64]",
                "gpt2_decoder",
                InputSpec((16,), "int64", low=0, high=1000),
                {
                    "vocab_size": 1000,
                    "n_embd": 64,
                    "n_layer": 2,
                    "n_head": 2,
                    "n_positions": 64,
                    "use_cache": False,
                    # GPT2Config's default 50256 lies outside this vocabulary.
                    "bos_token_id": 999,
                    "eos_token_id": 999,
                },
            ),
        )
    }
)


def list_zoo() -> list[tuple[str, str]]:
    """(name, one-line description) of every zoo model, in registry order."""
    return [(name, entry.description) for name, entry in ZOO.items()]


def zoo_entry(name: str) -> ZooEntry:
    """The entry called `name`; ModelError listing the known names if there is none."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelError(f"unknown zoo model '{name}' (known: {', '.join(ZOO)})") from None


class ZooSource(ModelSource):
    """A zoo model built with seeded random weights, traced to TorchScript by default.

    graph_mode: trace with `torch.jit.trace` at load (the graph mode Packrat's latency model was
        measured in); False serves the eager module. The graph is not frozen, so the weights
        stay shareable through `shared_tensors()`.
    seed: seeds torch's RNG while the weights are initialized; part of the identity.
    """

    def __init__(self, name: str, graph_mode: bool = True, seed: int = 0) -> None:
        self.entry = zoo_entry(name)
        self.name = name
        self.graph_mode = graph_mode
        self.seed = seed

    @property
    def input_spec(self) -> InputSpec:
        """The zoo entry's per-request input spec."""
        return self.entry.input_spec

    def eager(self) -> ZooSource:
        """The same model (same weights) without graph mode."""
        return ZooSource(self.name, graph_mode=False, seed=self.seed)

    def identity(self) -> ModelIdentity:
        """Hash of the architecture, config, input spec, seed, graph mode and library versions.

        Library versions are included because they define both the architecture code behind a
        config and the kernels whose latency a profile records.
        """
        description = {
            "name": self.name,
            "builder": self.entry.builder,
            "config": dict(self.entry.config),
            "input_spec": self.entry.input_spec.to_json(),
            "seed": self.seed,
            "graph_mode": self.graph_mode,
            "transformers": _version("transformers"),
            "torch": _version("torch"),
        }
        return ModelIdentity(self.name, json_sha256(description))

    def load(self) -> Handler:
        """Build the model (seconds for the full-size entries) and trace it if in graph mode."""
        import torch

        from packrat.models import hf_modules
        from packrat.models.tensor_handler import TensorHandler
        from packrat.models.tracing import trace_module

        build = getattr(hf_modules, self.entry.builder)
        # A forked RNG gives the same weights for the same seed without disturbing the caller's
        # random stream.
        with hf_modules.quiet_transformers():  # tracing reads properties that warn, too
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                module: torch.nn.Module = build(self.entry.config)
            module.requires_grad_(False)
            if self.graph_mode:
                module = trace_module(module, self.input_spec.example_batch(TRACE_BATCH_SIZE))
        return TensorHandler(module, self.input_spec, name=self.name)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
