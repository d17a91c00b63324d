"""Handler files: discovery of the one handler class, and one-line errors for bad files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from packrat.errors import ModelError
from packrat.models import HandlerFileSource

FIXTURE = Path(__file__).parents[1] / "fixtures" / "linear_handler.py"

_METHODS = """
    def preprocess(self, requests):
        return requests
    def inference(self, batch):
        return [x * 2 for x in batch]
    def postprocess(self, outputs):
        return outputs
    def example_requests(self, batch_size):
        return list(range(batch_size))
"""


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "handler.py"
    path.write_text(textwrap.dedent(body))
    return path


def _handler_class(name: str, extra: str = "") -> str:
    return f"class {name}(Handler):\n{extra}{_METHODS}\n"


def test_single_handler_is_instantiated_but_not_initialized(tmp_path: Path) -> None:
    # The worker calls initialize() itself, once, after pinning; load() must not.
    extra = "    ready = False\n    def initialize(self):\n        self.ready = True\n"
    body = "from packrat.models import Handler\n" + _handler_class("Doubler", extra)
    handler = HandlerFileSource(_write(tmp_path, body)).load()
    assert type(handler).__name__ == "Doubler"
    assert not handler.ready  # type: ignore[attr-defined]
    handler.initialize()
    assert handler.ready  # type: ignore[attr-defined]
    assert handler.handle([1, 2, 3]) == [2, 4, 6]


def test_imported_and_abstract_handlers_do_not_count(tmp_path: Path) -> None:
    body = (
        "from packrat.models import Handler\n"
        "from packrat.models.base import Handler as AlsoHandler\n"
        "class Base(Handler):\n    pass\n" + _handler_class("Concrete")
    )
    handler = HandlerFileSource(_write(tmp_path, body)).load()
    assert type(handler).__name__ == "Concrete"


def test_no_handler_class(tmp_path: Path) -> None:
    path = _write(tmp_path, "class NotAHandler:\n    pass\n")
    with pytest.raises(ModelError, match="defines no concrete subclass"):
        HandlerFileSource(path).load()


def test_several_handler_classes(tmp_path: Path) -> None:
    body = "from packrat.models import Handler\n" + _handler_class("A") + _handler_class("B")
    with pytest.raises(ModelError, match="several handler classes: A, B"):
        HandlerFileSource(_write(tmp_path, body)).load()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def broken(:\n", "SyntaxError"),
        ("import packrat_no_such_module\n", "ModuleNotFoundError"),
        ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
    ],
)
def test_import_failures_are_model_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ModelError, match=message) as info:
        HandlerFileSource(_write(tmp_path, body)).load()
    assert "\n" not in str(info.value)


def test_constructor_failure_is_model_error(tmp_path: Path) -> None:
    extra = "    def __init__(self):\n        raise ValueError('no weights')\n"
    body = "from packrat.models import Handler\n" + _handler_class("H", extra)
    with pytest.raises(ModelError, match="H in .* cannot be constructed: ValueError: no weights"):
        HandlerFileSource(_write(tmp_path, body)).load()


def test_constructor_with_arguments_is_model_error(tmp_path: Path) -> None:
    extra = "    def __init__(self, path):\n        self.path = path\n"
    body = "from packrat.models import Handler\n" + _handler_class("H", extra)
    with pytest.raises(ModelError, match="TypeError"):
        HandlerFileSource(_write(tmp_path, body)).load()


def test_missing_handler_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="handler file .* does not exist"):
        HandlerFileSource(tmp_path / "nope.py").load()


def test_linear_fixture_serves_deterministic_outputs() -> None:
    import torch

    first = HandlerFileSource(FIXTURE).load()
    second = HandlerFileSource(FIXTURE).load()
    first.initialize()
    second.initialize()
    requests = first.example_requests(3)
    assert [r.shape for r in requests] == [torch.Size([16])] * 3
    outputs = first.handle(requests)
    assert [o.shape for o in outputs] == [torch.Size([4])] * 3
    assert all(torch.equal(a, b) for a, b in zip(outputs, second.handle(requests), strict=True))
    assert set(first.shared_tensors()) == {"weight", "bias"}
