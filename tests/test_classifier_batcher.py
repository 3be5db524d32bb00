"""classifier.batcher.DynamicBatcher against the real default model.

The runner is wrapped, not stubbed: subclasses of ModelRunner record what reached the model,
or hold the inference thread inside a real forward pass (gate) so the queue can be filled
deterministically, then call the real implementation.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest

from classifier.batcher import BatcherConfig, DynamicBatcher
from classifier.errors import (
    BatcherClosed,
    ClassifierError,
    DeadlineExceeded,
    Overloaded,
)
from classifier.runner import ModelRunner, Prediction, RunnerConfig

from .conftest_classifier import SAMPLE_TEXTS, SKIP_NO_DEFAULT, default_model_dir, wrap_runner

WAIT = 10.0  # upper bound for anything that should finish; a hang fails instead of blocking


class RecordingRunner(ModelRunner):
    """Records every batch given to the model (as token-id lists and as texts)."""

    def _wrapped_init(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.ids_to_text: dict[tuple[int, ...], str] = {}
        self.tokenize_calls = 0
        self.fail_next = False
        self.gate: threading.Event | None = None  # forward waits on it while set
        self.entered = threading.Event()  # set when a forward pass starts

    def tokenize(self, texts):
        self.tokenize_calls += 1
        out = super().tokenize(texts)
        for text, ids in zip(texts, out, strict=True):
            self.ids_to_text[tuple(ids)] = text
        return out

    def forward_ids(self, batch):
        self.batches.append([list(x) for x in batch])
        self.entered.set()
        gate = self.gate
        if gate is not None:
            assert gate.wait(WAIT), "test gate never opened"
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("simulated CUDA error: device-side assert triggered")
        return super().forward_ids(batch)

    # helpers for the tests
    def texts_seen(self) -> list[str]:
        return [self.ids_to_text[tuple(ids)] for b in self.batches for ids in b]

    def hold(self) -> None:
        self.gate = threading.Event()
        self.entered.clear()

    def release(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.set()


@pytest.fixture(scope="module")
def base_runner() -> ModelRunner:
    d = default_model_dir()
    if d is None:
        pytest.skip(SKIP_NO_DEFAULT)
    return ModelRunner(RunnerConfig(model_dir=Path(d), device="cpu"))


@pytest.fixture
def runner(base_runner: ModelRunner) -> RecordingRunner:
    r = wrap_runner(base_runner, RecordingRunner)
    yield r
    r.release()


async def _batcher(runner: ModelRunner, **cfg) -> DynamicBatcher:
    b = DynamicBatcher(runner, BatcherConfig(**cfg), registry=CollectorRegistry())
    await b.start()
    return b


async def _wait_entered(runner: RecordingRunner) -> None:
    """Wait (without blocking the loop) until the inference thread is inside forward."""
    ok = await asyncio.to_thread(runner.entered.wait, WAIT)
    assert ok, "inference thread never reached the model"


async def _settle(b: DynamicBatcher, depth: int) -> None:
    deadline = time.monotonic() + WAIT
    while b.queue_depth != depth:
        assert time.monotonic() < deadline, f"queue depth stuck at {b.queue_depth}"
        await asyncio.sleep(0.001)


def _metric(b: DynamicBatcher, name: str, **labels) -> float:
    v = b.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


def _texts(n: int) -> list[str]:
    return [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} #{i}" for i in range(n)]


# ---------------------------------------------------------------- batching


async def test_concurrent_requests_coalesce_and_match_unbatched(runner: RecordingRunner) -> None:
    texts = _texts(64)
    b = await _batcher(runner)
    try:
        preds = await asyncio.wait_for(asyncio.gather(*(b.classify(t) for t in texts)), WAIT)
    finally:
        await b.close()
    assert len(runner.batches) < 64
    mean = sum(len(x) for x in runner.batches) / len(runner.batches)
    assert mean > 1, f"no coalescing: {[len(x) for x in runner.batches]}"
    assert sorted(runner.texts_seen()) == sorted(texts)  # each ran exactly once
    assert _metric(b, "smsfw_classifier_batch_size_count") == len(runner.batches)
    assert _metric(b, "smsfw_classifier_requests_total", outcome="ok") == 64
    # results do not depend on the batch a text landed in
    alone = [ModelRunner.predict(runner, [t])[0] for t in texts[:8]]
    for got, want in zip(preds[:8], alone, strict=True):
        assert isinstance(got, Prediction) and got.label == want.label
        for k in want.probs:
            assert abs(got.probs[k] - want.probs[k]) < 1e-4


async def test_batch_size_and_token_budget_hold(runner: RecordingRunner) -> None:
    short = [f"ok {i}" for i in range(40)]
    long = [f"{SAMPLE_TEXTS[2]} {SAMPLE_TEXTS[15]} {i}" for i in range(40)]
    mixed = [t for pair in zip(short, long, strict=True) for t in pair]
    lengths = runner.token_lengths(mixed)
    budget = 4 * max(lengths)  # at most 4 long ones, more short ones
    b = await _batcher(runner, max_batch_size=8, max_batch_tokens=budget, max_padding_ratio=None)
    runner.hold()
    try:
        first = asyncio.ensure_future(b.classify("warm"))
        await _wait_entered(runner)  # everything below queues up behind the gated batch
        rest = [asyncio.ensure_future(b.classify(t)) for t in mixed]
        await _settle(b, len(mixed))
        runner.release()
        await asyncio.wait_for(asyncio.gather(first, *rest), WAIT)
    finally:
        await b.close()
    sizes = [len(x) for x in runner.batches]
    assert max(sizes) <= 8
    for batch in runner.batches:
        assert len(batch) * max(map(len, batch)) <= budget, [len(x) for x in batch]
    assert sorted(runner.texts_seen()) == sorted(["warm", *mixed])
    # length bucketing: short and long texts were not mixed, so padding stays low
    ratios = [len(x) * max(map(len, x)) / sum(map(len, x)) for x in runner.batches[1:]]
    assert max(ratios) < 1.5, ratios


async def test_max_padding_ratio_holds(runner: RecordingRunner) -> None:
    texts = _texts(60)
    b = await _batcher(runner, max_padding_ratio=1.2)
    runner.hold()
    try:
        first = asyncio.ensure_future(b.classify("warm"))
        await _wait_entered(runner)
        rest = [asyncio.ensure_future(b.classify(t)) for t in texts]
        await _settle(b, len(texts))
        runner.release()
        await asyncio.wait_for(asyncio.gather(first, *rest), WAIT)
    finally:
        await b.close()
    assert sorted(runner.texts_seen()) == sorted(["warm", *texts])
    for batch in runner.batches:
        assert len(batch) * max(map(len, batch)) <= 1.2 * sum(map(len, batch)) + 1e-9


def test_padding_ratio_auto_depends_on_device(runner: RecordingRunner) -> None:
    assert DynamicBatcher(runner).max_padding_ratio == 1.2  # CPU runner
    assert DynamicBatcher(runner, BatcherConfig(max_padding_ratio=None)).max_padding_ratio is None
    assert DynamicBatcher(runner, BatcherConfig(max_padding_ratio=1.5)).max_padding_ratio == 1.5
    with pytest.raises(ValueError):
        BatcherConfig(max_padding_ratio=0.9)
    with pytest.raises(ValueError):
        BatcherConfig(max_padding_ratio="sometimes")


async def test_single_request_longer_than_budget_still_runs(runner: RecordingRunner) -> None:
    b = await _batcher(runner, max_batch_tokens=4)
    try:
        res = await asyncio.wait_for(asyncio.gather(*(b.classify(t) for t in _texts(3))), WAIT)
    finally:
        await b.close()
    assert len(res) == 3 and all(len(x) == 1 for x in runner.batches)


async def test_oldest_request_is_not_starved(runner: RecordingRunner) -> None:
    """A long text queued before a crowd of short ones runs in the first batch after."""
    b = await _batcher(runner, max_batch_size=4)
    runner.hold()
    try:
        first = asyncio.ensure_future(b.classify("warm"))
        await _wait_entered(runner)
        lonely = asyncio.ensure_future(b.classify(SAMPLE_TEXTS[15]))
        crowd = [asyncio.ensure_future(b.classify(f"ok {i}")) for i in range(40)]
        await _settle(b, 41)
        runner.release()
        await asyncio.wait_for(asyncio.gather(first, lonely, *crowd), WAIT)
    finally:
        await b.close()
    second = [runner.ids_to_text[tuple(ids)] for ids in runner.batches[1]]
    assert SAMPLE_TEXTS[15] in second


async def test_max_wait_ms_gathers_a_batch(runner: RecordingRunner) -> None:
    b = await _batcher(runner, max_wait_ms=300.0, max_padding_ratio=None)
    try:
        first = asyncio.ensure_future(b.classify("first"))
        await asyncio.sleep(0.03)
        later = [asyncio.ensure_future(b.classify(f"later {i}")) for i in range(3)]
        await asyncio.wait_for(asyncio.gather(first, *later), WAIT)
    finally:
        await b.close()
    assert [len(x) for x in runner.batches] == [4]


async def test_bad_input_fails_only_its_request(runner: RecordingRunner) -> None:
    b = await _batcher(runner)
    runner.hold()
    try:
        gate_req = asyncio.ensure_future(b.classify("gate"))
        await _wait_entered(runner)
        reqs = [
            asyncio.ensure_future(b.classify("fine 1")),
            asyncio.ensure_future(b.classify(None)),  # type: ignore[arg-type]
            asyncio.ensure_future(b.classify("fine 2")),
        ]
        await _settle(b, 3)
        runner.release()
        res = await asyncio.wait_for(asyncio.gather(*reqs, return_exceptions=True), WAIT)
        await gate_req
    finally:
        await b.close()
    assert isinstance(res[0], Prediction) and isinstance(res[2], Prediction)
    assert isinstance(res[1], ClassifierError) and isinstance(res[1].__cause__, TypeError)


# ---------------------------------------------------------------- admission and skipping


async def test_overload_rejects_immediately(runner: RecordingRunner) -> None:
    b = await _batcher(runner, max_queue=4)
    runner.hold()
    try:
        running = asyncio.ensure_future(b.classify("running"))
        await _wait_entered(runner)
        queued = [asyncio.ensure_future(b.classify(f"queued {i}")) for i in range(4)]
        await asyncio.sleep(0)
        assert b.queue_depth == 4
        t0 = time.monotonic()
        with pytest.raises(Overloaded):
            await b.classify("one too many")
        assert time.monotonic() - t0 < 0.05
        assert _metric(b, "smsfw_classifier_rejected_total") == 1
        assert _metric(b, "smsfw_classifier_requests_total", outcome="rejected") == 1
        assert _metric(b, "smsfw_classifier_queue_depth") == 4
        runner.release()
        res = await asyncio.wait_for(asyncio.gather(running, *queued), WAIT)
    finally:
        await b.close()
    assert len(res) == 5
    assert "one too many" not in runner.texts_seen()
    assert b.queue_depth == 0


async def test_expired_deadline_never_reaches_model(runner: RecordingRunner) -> None:
    b = await _batcher(runner)
    try:
        with pytest.raises(DeadlineExceeded):
            await b.classify("too late", deadline=time.monotonic() - 1.0)
        ok = await asyncio.wait_for(b.classify("in time", deadline=time.monotonic() + WAIT), WAIT)
    finally:
        await b.close()
    assert isinstance(ok, Prediction)
    assert runner.texts_seen() == ["in time"]
    assert _metric(b, "smsfw_classifier_expired_total") == 1


async def test_deadline_passing_in_queue_skips_work(runner: RecordingRunner) -> None:
    b = await _batcher(runner)
    runner.hold()
    try:
        running = asyncio.ensure_future(b.classify("running"))
        await _wait_entered(runner)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await b.classify("expires while queued", deadline=t0 + 0.05)
        # the caller is answered at its deadline although the model is still busy
        assert time.monotonic() - t0 < 1.0
        assert b.queue_depth == 0
        runner.release()
        await asyncio.wait_for(running, WAIT)
        await asyncio.wait_for(b.classify("after"), WAIT)
    finally:
        await b.close()
    assert "expires while queued" not in runner.texts_seen()
    assert _metric(b, "smsfw_classifier_expired_total") == 1
    assert _metric(b, "smsfw_classifier_requests_total", outcome="expired") == 1


async def test_default_timeout_applies(runner: RecordingRunner) -> None:
    b = await _batcher(runner, default_timeout_s=0.05)
    runner.hold()
    try:
        running = asyncio.ensure_future(b.classify("running"))
        await _wait_entered(runner)
        with pytest.raises(DeadlineExceeded):
            await b.classify("queued")
        runner.release()
        with pytest.raises(DeadlineExceeded):  # its own deadline passed too
            await running
    finally:
        await b.close()
    assert runner.texts_seen() == ["running"]


async def test_cancelled_request_is_skipped(runner: RecordingRunner) -> None:
    b = await _batcher(runner)
    runner.hold()
    try:
        running = asyncio.ensure_future(b.classify("running"))
        await _wait_entered(runner)
        doomed = asyncio.ensure_future(b.classify("cancelled caller"))
        kept = asyncio.ensure_future(b.classify("kept"))
        await asyncio.sleep(0)
        assert b.queue_depth == 2
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert b.queue_depth == 1
        # wait_for timing out cancels the same way
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.classify("timed out caller"), 0.02)
        runner.release()
        await asyncio.wait_for(asyncio.gather(running, kept), WAIT)
    finally:
        await b.close()
    seen = runner.texts_seen()
    assert "cancelled caller" not in seen and "timed out caller" not in seen
    assert sorted(seen) == ["kept", "running"]
    assert _metric(b, "smsfw_classifier_cancelled_total") == 2


async def test_cancel_while_running_is_harmless(runner: RecordingRunner) -> None:
    b = await _batcher(runner)
    runner.hold()
    try:
        running = asyncio.ensure_future(b.classify("running"))
        await _wait_entered(runner)
        running.cancel()  # its batch is already in the model: the result is dropped
        runner.release()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert isinstance(await asyncio.wait_for(b.classify("next"), WAIT), Prediction)
    finally:
        await b.close()


# ---------------------------------------------------------------- failures


async def test_model_error_reaches_every_waiter_of_the_batch(base_runner: ModelRunner) -> None:
    class FailOnVictims(RecordingRunner):
        def forward_ids(self, batch):
            texts = [self.ids_to_text.get(tuple(ids), "") for ids in batch]
            if any(t.startswith("victim") for t in texts) and self.fail_victims:
                self.fail_victims = False
                self.batches.append([list(x) for x in batch])
                raise RuntimeError("simulated CUDA error: device-side assert triggered")
            return super().forward_ids(batch)

    runner = wrap_runner(base_runner, FailOnVictims)
    runner.fail_victims = False
    b = await _batcher(runner)
    runner.hold()
    try:
        gate_req = asyncio.ensure_future(b.classify("gate"))
        await _wait_entered(runner)
        victims = [asyncio.ensure_future(b.classify(f"victim {i}")) for i in range(5)]
        await _settle(b, 5)
        runner.fail_victims = True
        runner.release()
        results = await asyncio.wait_for(asyncio.gather(*victims, return_exceptions=True), WAIT)
        assert isinstance(await gate_req, Prediction)
        assert len(runner.batches[-1]) == 5  # the five victims shared one failing pass
        for r in results:
            assert isinstance(r, ClassifierError), r
            assert isinstance(r.__cause__, RuntimeError)
            assert "device-side assert" in str(r.__cause__)
        assert len({id(r) for r in results}) == 5  # one exception object per waiter
        # the batcher goes on serving
        after = await asyncio.wait_for(asyncio.gather(*(b.classify(t) for t in _texts(6))), WAIT)
        assert all(isinstance(p, Prediction) for p in after)
    finally:
        runner.release()
        await b.close()
    assert _metric(b, "smsfw_classifier_requests_total", outcome="error") == 5
    assert _metric(b, "smsfw_classifier_batch_errors_total") == 1


# ---------------------------------------------------------------- close


async def test_close_fails_pending_and_does_not_hang(runner: RecordingRunner) -> None:
    b = await _batcher(runner, join_timeout_s=0.3)
    runner.hold()
    running = asyncio.ensure_future(b.classify("running"))
    await _wait_entered(runner)
    pending = [asyncio.ensure_future(b.classify(f"pending {i}")) for i in range(3)]
    await asyncio.sleep(0)
    t0 = time.monotonic()
    closing = asyncio.ensure_future(b.close())
    # the waiting requests fail at once, before the running batch is over
    for p in pending:
        with pytest.raises(BatcherClosed):
            await asyncio.wait_for(p, 0.2)
    # the model stays stuck: close gives up after join_timeout_s instead of hanging
    await asyncio.wait_for(closing, WAIT)
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(BatcherClosed):
        await running
    await asyncio.wait_for(b.close(), 1.0)  # second close is a no-op
    with pytest.raises(BatcherClosed):
        await b.classify("after close")
    runner.release()  # let the abandoned thread finish
    assert _metric(b, "smsfw_classifier_requests_total", outcome="closed") == 5
    assert all(t.startswith("running") for t in runner.texts_seen())


async def test_close_lets_running_batch_finish(runner: RecordingRunner) -> None:
    b = await _batcher(runner)
    runner.hold()
    running = asyncio.ensure_future(b.classify("running"))
    await _wait_entered(runner)
    queued = asyncio.ensure_future(b.classify("queued"))
    await asyncio.sleep(0)
    closing = [asyncio.ensure_future(b.close()), asyncio.ensure_future(b.close())]
    await asyncio.sleep(0.05)
    runner.release()
    await asyncio.wait_for(asyncio.gather(*closing), WAIT)
    assert isinstance(running.result(), Prediction)
    with pytest.raises(BatcherClosed):
        queued.result()
    assert b._thread is not None and not b._thread.is_alive()


async def test_close_idle_and_context_manager(runner: RecordingRunner) -> None:
    async with DynamicBatcher(runner, BatcherConfig()) as b:
        assert isinstance(await asyncio.wait_for(b.classify("hello"), WAIT), Prediction)
    assert not b._thread.is_alive()
    never_started = DynamicBatcher(runner)
    await asyncio.wait_for(never_started.close(), 1.0)


# ---------------------------------------------------------------- metrics


async def test_metrics_exposed_on_private_registry(runner: RecordingRunner) -> None:
    b1 = await _batcher(runner)
    b2 = DynamicBatcher(runner)  # default: its own new registry, no clash with b1
    await b2.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(b1.classify(t) for t in _texts(20))), WAIT)
    finally:
        await b1.close()
        await b2.close()
    text = generate_latest(b1.metrics.registry).decode()
    for name in (
        "smsfw_classifier_queue_depth",
        "smsfw_classifier_batch_size_bucket",
        "smsfw_classifier_batch_tokens_bucket",
        "smsfw_classifier_padding_ratio_bucket",
        "smsfw_classifier_inference_seconds_bucket",
        "smsfw_classifier_requests_total",
        "smsfw_classifier_rejected_total",
        "smsfw_classifier_expired_total",
        "smsfw_classifier_cancelled_total",
    ):
        assert name in text, name
    assert _metric(b1, "smsfw_classifier_requests_total", outcome="ok") == 20
    assert _metric(b1, "smsfw_classifier_batch_size_sum") == 20
    assert _metric(b1, "smsfw_classifier_padding_ratio_count") >= 1
    assert _metric(b1, "smsfw_classifier_queue_depth") == 0
    assert b2.metrics.registry is not b1.metrics.registry


async def test_tokenization_runs_in_inference_thread(base_runner: ModelRunner) -> None:
    class ThreadCheck(RecordingRunner):
        def _wrapped_init(self) -> None:
            super()._wrapped_init()
            self.threads: set[str] = set()

        def tokenize(self, texts):
            self.threads.add(threading.current_thread().name)
            return super().tokenize(texts)

        def forward_ids(self, batch):
            self.threads.add(threading.current_thread().name)
            return super().forward_ids(batch)

    runner = wrap_runner(base_runner, ThreadCheck)
    b = await _batcher(runner)
    try:
        await asyncio.wait_for(asyncio.gather(*(b.classify(t) for t in _texts(10))), WAIT)
    finally:
        await b.close()
    assert runner.threads == {"classifier-inference"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
async def test_batcher_on_cuda_fp16() -> None:
    d = default_model_dir()
    if d is None:
        pytest.skip(SKIP_NO_DEFAULT)
    r = ModelRunner(RunnerConfig(model_dir=Path(d), device="cuda", fp16=True))
    b = await _batcher(r, warmup=True)
    try:
        preds = await asyncio.wait_for(asyncio.gather(*(b.classify(t) for t in _texts(64))), WAIT)
    finally:
        await b.close()
    assert len(preds) == 64


def test_bench_script_smoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/batcher.py runs end to end (tiny model, a few messages)."""
    import importlib.util

    from .conftest_classifier import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    path = Path(__file__).resolve().parent.parent / "bench" / "batcher.py"
    spec = importlib.util.spec_from_file_location("bench_batcher", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_batcher", bench)  # dataclasses look it up
    spec.loader.exec_module(bench)
    texts = bench.make_texts(200, seed=3)
    assert len(set(texts)) > 150 and max(map(len, texts)) > 160 and min(map(len, texts)) < 20
    bench.main(["--model", str(model), "--concurrency", "8", "--messages", "40", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("throughput ratio batched/unbatched:")
    assert any(line.startswith("(a) one-at-a-time") for line in lines)
    assert any(line.startswith("(b) dynamic batcher") for line in lines)
