"""SMS classifier: text normalisation, model runner and dynamic batcher.

Importing the package is cheap: torch and transformers are loaded only when the runner or the
batcher is first used (``from classifier import ModelRunner`` loads them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BatcherClosed,
    ClassifierError,
    ClassifierException,
    DeadlineExceeded,
    ModelLoadError,
    Overloaded,
)
from .normalize import normalize_text

if TYPE_CHECKING:  # pragma: no cover
    from .batcher import BatcherConfig, DynamicBatcher
    from .metrics import BatcherMetrics
    from .runner import ModelRunner, Prediction, RunnerConfig

_LAZY = {
    "BatcherConfig": "batcher",
    "DynamicBatcher": "batcher",
    "BatcherMetrics": "metrics",
    "ModelRunner": "runner",
    "Prediction": "runner",
    "RunnerConfig": "runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BatcherClosed",
    "BatcherConfig",
    "BatcherMetrics",
    "ClassifierError",
    "ClassifierException",
    "DeadlineExceeded",
    "DynamicBatcher",
    "ModelLoadError",
    "ModelRunner",
    "Overloaded",
    "Prediction",
    "RunnerConfig",
    "normalize_text",
]
