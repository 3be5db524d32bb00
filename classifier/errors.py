"""Exceptions raised by the classifier (runner and dynamic batcher).

They all derive from :class:`ClassifierException`, so a caller can catch everything the
classifier raises in one place, and still tell the cases apart:

* :class:`ModelLoadError`: the model directory / weights cannot be used (raised at start-up).
* :class:`ClassifierError`: the model failed on a batch (the original exception is chained as
  ``__cause__``); every request of that batch gets its own instance.
* :class:`Overloaded`: the batcher queue is full, the request was rejected without queueing.
* :class:`DeadlineExceeded`: the request's deadline passed before a result was available.
  Also a :class:`TimeoutError`.
* :class:`BatcherClosed`: the batcher is closed, or was closed while the request was pending.
"""

from __future__ import annotations


class ClassifierException(Exception):
    """Base class of every exception raised by the classifier package."""


class ModelLoadError(ClassifierException):
    """The model or tokenizer could not be loaded; the message says what to fix."""


class ClassifierError(ClassifierException):
    """The model failed while classifying (the underlying exception is ``__cause__``)."""


class Overloaded(ClassifierException):
    """The batcher already holds ``max_queue`` pending requests; retry later or fail open."""


class DeadlineExceeded(ClassifierException, TimeoutError):
    """The request's deadline passed before it could be classified."""


class BatcherClosed(ClassifierException):
    """The batcher is closed (or closing) and does not accept or finish this request."""


__all__ = [
    "BatcherClosed",
    "ClassifierError",
    "ClassifierException",
    "DeadlineExceeded",
    "ModelLoadError",
    "Overloaded",
]
