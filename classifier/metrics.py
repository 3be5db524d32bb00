"""Prometheus metrics of the dynamic batcher.

Every metric is registered on the registry given to :class:`BatcherMetrics` (a new private
``CollectorRegistry`` by default, never the process-global one), so tests and benchmarks can
build as many batchers as they like. One batcher per registry: the names are fixed.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "smsfw_classifier_"

# Outcomes of ``requests_total``.
OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"  # model failure (ClassifierError)
OUTCOME_REJECTED = "rejected"  # Overloaded
OUTCOME_EXPIRED = "expired"  # DeadlineExceeded
OUTCOME_CANCELLED = "cancelled"  # the caller was cancelled
OUTCOME_CLOSED = "closed"  # BatcherClosed
OUTCOMES = (
    OUTCOME_OK,
    OUTCOME_ERROR,
    OUTCOME_REJECTED,
    OUTCOME_EXPIRED,
    OUTCOME_CANCELLED,
    OUTCOME_CLOSED,
)

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_PADDING_BUCKETS = (1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0)
_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class BatcherMetrics:
    """The batcher's metric objects, all named ``smsfw_classifier_*``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            PREFIX + "queue_depth",
            "Requests admitted and waiting for a batch (not yet running).",
            registry=r,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size",
            "Requests per forward pass.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            PREFIX + "batch_tokens",
            "Padded tokens per forward pass (batch size * longest sequence).",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            PREFIX + "padding_ratio",
            "Padded tokens / real tokens per forward pass (1.0 = no padding).",
            buckets=_PADDING_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            PREFIX + "inference_seconds",
            "Wall time of one forward pass (model only, tokenization excluded).",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            PREFIX + "tokenize_seconds",
            "Wall time of tokenizing a group of newly arrived requests.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            PREFIX + "queue_wait_seconds",
            "Time from admission until the request's batch starts.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.requests_total = Counter(
            PREFIX + "requests",
            "Classification requests by outcome.",
            labelnames=("outcome",),
            registry=r,
        )
        # every series exported from the start; children cached for the hot path
        self._by_outcome = {o: self.requests_total.labels(outcome=o) for o in OUTCOMES}
        self.rejected_total = Counter(
            PREFIX + "rejected",
            "Requests rejected because the queue was full (Overloaded).",
            registry=r,
        )
        self.expired_total = Counter(
            PREFIX + "expired",
            "Requests whose deadline passed before they got a result (DeadlineExceeded).",
            registry=r,
        )
        self.cancelled_total = Counter(
            PREFIX + "cancelled",
            "Requests whose caller was cancelled before they got a result.",
            registry=r,
        )
        self.batch_errors_total = Counter(
            PREFIX + "batch_errors",
            "Forward passes that raised (every request of the batch failed).",
            registry=r,
        )

    def track_queue_depth(self, fn: Callable[[], float]) -> None:
        """Make the queue depth gauge read ``fn()`` at every scrape."""
        self.queue_depth.set_function(fn)

    def outcome(self, outcome: str, n: int = 1) -> None:
        child = self._by_outcome.get(outcome)
        if child is None:
            child = self._by_outcome[outcome] = self.requests_total.labels(outcome=outcome)
        child.inc(n)
        if outcome == OUTCOME_REJECTED:
            self.rejected_total.inc(n)
        elif outcome == OUTCOME_EXPIRED:
            self.expired_total.inc(n)
        elif outcome == OUTCOME_CANCELLED:
            self.cancelled_total.inc(n)


__all__ = ["BatcherMetrics", "PREFIX", "OUTCOMES"]
