"""Handler files: a Python file that defines how to load and run a model, as in TorchServe.

The file defines exactly one concrete subclass of `packrat.models.Handler`. Packrat imports the
file in each worker and instantiates that class with no arguments (`load()`); the worker then
calls `initialize()` once, after pinning its threads, so create weights there rather than in
`__init__`. Classes the file imports (rather than defines) and abstract classes do not count,
so a file may subclass a helper such as `TensorHandler`.
A minimal file:

    import torch
    from packrat.models import Handler

    class DoubleHandler(Handler):
        def initialize(self) -> None:
            self.scale = torch.tensor(2.0)

        def preprocess(self, requests):
            return torch.stack(requests)

        def inference(self, batch):
            with torch.inference_mode():
                return batch * self.scale

        def postprocess(self, outputs):
            return [row.clone() for row in outputs]

        def example_requests(self, batch_size):
            generator = torch.Generator().manual_seed(0)
            return list(torch.randn(batch_size, 8, generator=generator))

The model's identity hashes the file's bytes only: if the handler reads weights from other
files, rename the handler file (or change it) when they change, or profiles will be reused.

Security: a handler file is arbitrary Python that runs with Packrat's permissions. Only load
files you trust.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType

from packrat.errors import ModelError
from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.identity import existing_file, file_sha256


class HandlerFileSource(ModelSource):
    """A Python handler file on local disk (see the module docstring for the format).

    path: the .py file; stored absolute so a worker with another working directory finds it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self.name = self.path.name

    def identity(self) -> ModelIdentity:
        """The file name and the sha256 of its bytes."""
        return ModelIdentity(self.name, file_sha256(self.path, "handler file"))

    def load(self) -> Handler:
        """Import the file and instantiate its handler class; the caller calls `initialize()`.

        Raises ModelError if the file cannot be imported, defines no or several handler
        classes, or if the class cannot be constructed with no arguments.
        """
        module = self._import()
        handler_class = find_handler_class(module, self.path)
        try:
            return handler_class()
        except Exception as exc:  # a user's handler may raise anything
            raise ModelError(
                f"handler {handler_class.__name__} in '{self.path}' cannot be constructed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _import(self) -> ModuleType:
        existing_file(self.path, "handler file")
        # A name unique to the file's content, so two handler files (or two versions of one)
        # never replace each other in sys.modules.
        module_name = f"packrat_handler_{file_sha256(self.path, 'handler file')[:16]}"
        spec = importlib.util.spec_from_file_location(module_name, self.path)
        if spec is None or spec.loader is None:
            raise ModelError(f"cannot import handler file '{self.path}'")
        module = importlib.util.module_from_spec(spec)
        # Registered before running it, as importlib does: dataclasses and pickle look classes
        # up through sys.modules.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # SyntaxError, ImportError, or anything the file raises
            del sys.modules[module_name]
            raise ModelError(
                f"cannot import handler file '{self.path}': {type(exc).__name__}: {exc}"
            ) from exc
        return module


def find_handler_class(module: ModuleType, path: Path) -> type[Handler]:
    """The one concrete Handler subclass defined in `module`; ModelError if none or several."""
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Handler)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if not found:
        raise ModelError(
            f"handler file '{path}' defines no concrete subclass of packrat.models.Handler"
        )
    if len(found) > 1:
        names = ", ".join(sorted(c.__name__ for c in found))
        raise ModelError(f"handler file '{path}' defines several handler classes: {names}")
    return found[0]
