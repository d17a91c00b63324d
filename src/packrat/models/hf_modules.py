"""Builders for the zoo's Hugging Face models, each wrapped to return a single tensor.

A builder takes the keyword arguments of its model's `transformers` config and returns an eager
module in eval mode whose `forward(batch)` returns one batch-first tensor (logits for
classifiers, the last hidden state for encoders and decoders), which is what tracing and
`TensorHandler` need. Weights come from the model's own random initialization: seed torch's RNG
before calling a builder for reproducible weights. Nothing is downloaded.
Importing this module imports torch and transformers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import transformers


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' informational warnings (e.g. about unused loss settings of a
    randomly initialized config) while building a model, then restore its verbosity."""
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)


class FirstOutput(torch.nn.Module):
    """Calls a Hugging Face model with `return_dict=False` and returns its first output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output = self.model(inputs, return_dict=False)
        first: torch.Tensor = output[0]
        return first


class CausalHiddenStates(torch.nn.Module):
    """A causal decoder (GPT-2) returning its last hidden state, traceable at any batch size."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Traced without a mask, transformers builds a "packed sequence" mask whose batch size
        # is a constant when the trace runs at batch 1. An all-ones mask takes the padding path,
        # whose shapes follow the input. Eager calls keep the faster mask-free path.
        tracing = torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
        mask = torch.ones_like(input_ids) if tracing else None
        output = self.model(input_ids, attention_mask=mask, return_dict=False)
        first: torch.Tensor = output[0]
        return first


def resnet_classifier(config: Mapping[str, Any]) -> torch.nn.Module:
    """ResNetForImageClassification(ResNetConfig(**config)) -> logits [batch, num_labels]."""
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig(**config))
    return FirstOutput(model).eval()


def mobilenet_v2_classifier(config: Mapping[str, Any]) -> torch.nn.Module:
    """MobileNetV2ForImageClassification(MobileNetV2Config(**config)) -> logits."""
    config_object = transformers.MobileNetV2Config(**config)
    return FirstOutput(transformers.MobileNetV2ForImageClassification(config_object)).eval()


def bert_encoder(config: Mapping[str, Any]) -> torch.nn.Module:
    """BertModel(BertConfig(**config)) -> last hidden state [batch, tokens, hidden]."""
    return FirstOutput(transformers.BertModel(transformers.BertConfig(**config))).eval()


def gpt2_decoder(config: Mapping[str, Any]) -> torch.nn.Module:
    """GPT2Model(GPT2Config(**config)) -> last hidden state [batch, tokens, hidden]."""
    return CausalHiddenStates(transformers.GPT2Model(transformers.GPT2Config(**config))).eval()
