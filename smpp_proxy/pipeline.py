"""The filtering pipeline: assembler → classifier → policy → upstream (or block).

``FilteringHandler`` is the SubmitHandler used when the classifier is enabled.

Response semantics (no deadlock with a window of 1): a non-final part of a multipart message is
answered as soon as it is stored (with its proxy id); the part that completes the message is
answered after the verdict and, when forwarded, after the upstream answered it. All the original
part PDUs go upstream unchanged (UDH intact), in part order.

When a message is blocked, the completing part gets the reject status, and each earlier part that
asked for a receipt gets a synthesised receipt (stat REJECTD, err = the status). Earlier parts the
upstream refuses get an UNDELIV receipt. ``drop`` answers OK, never forwards, and sends the
configured receipt. Incomplete messages are released after ``multipart.timeout_s`` and go
through the same policy on the text that arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from classifier.errors import Overloaded

from .assembler import AssembledMessage, Assembler
from .config import ClientConfig, ProxyConfig
from .constants import Status
from .dlr import build_receipt
from .forwarder import Forwarder
from .metrics import LATENCY_BUCKETS, ProxyMetrics
from .pdu import Pdu
from .policy import TEMPORARY_STATUSES, ClientPolicy, PolicyEngine, Verdict
from .relay import Outbox
from .store import Store
from .transport import SmppConnection

log = logging.getLogger(__name__)


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.messages = Counter(
            "smsfw_messages_total", "Whole messages by client, label, action and reason",
            ["client", "label", "action", "reason"], registry=r,
        )
        self.shadow = Counter(
            "smsfw_shadow_verdicts_total",
            "Verdicts computed in shadow mode (forwarded regardless), by client, label and action",
            ["client", "label", "action"], registry=r,
        )
        self.classify_latency = Histogram(
            "smsfw_classification_latency_seconds", "Time to classify one whole message",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.e2e_latency = Histogram(
            "smsfw_message_latency_seconds",
            "First part received to the verdict carried out (forwarded or blocked)",
            ["action"], buckets=LATENCY_BUCKETS, registry=r,
        )
        # the assembler reports through these three (see assembler._Metrics)
        self.assembler_pending_messages = Gauge(
            "smsfw_multipart_pending_messages", "Multipart messages waiting for parts", registry=r
        )
        self.assembler_pending_parts = Gauge(
            "smsfw_multipart_pending_parts", "Parts held for incomplete messages", registry=r
        )
        self.assembler_events = Counter(
            "smsfw_assembler_events_total",
            "Assembler outcomes per submit (single, held, complete, duplicate, overflow, "
            "expired, conflict, broken_udh)",
            ["event"], registry=r,
        )
        self.multipart_timeouts = Counter(
            "smsfw_multipart_timeouts_total", "Multipart messages released incomplete", registry=r
        )
        self.classifier_errors = Counter(
            "smsfw_classifier_failures_total", "Classifications that failed, by kind",
            ["kind"], registry=r,
        )


class AuditLog:
    """JSON lines, one per verdict; the text kept in full, hashed, or not at all."""

    def __init__(self, path: str, text_mode: str):
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._f = p.open("a", encoding="utf-8", buffering=1)
        self.text_mode = text_mode

    def write(self, client: str, msg: AssembledMessage, verdict: Verdict) -> None:
        first = msg.pdus[0].params
        rec: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "client": client,
            "source": first.get("source_addr", ""),
            "destination": first.get("destination_addr", ""),
            "parts": len(msg.parts),
            "complete": msg.complete,
            "label": verdict.label,
            "probs": verdict.probs,
            "action": verdict.action,
            "enforced": verdict.enforced,
            "reason": verdict.reason,
        }
        if self.text_mode == "full":
            rec["text"] = msg.text
        elif self.text_mode == "hash":
            rec["text_sha256"] = hashlib.sha256(msg.text.encode("utf-8")).hexdigest()
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._f.close()


@dataclass
class _Outcome:
    status: int
    proxy_id: str | None
    resp: Pdu | None = None
    action: str = "forward"  # the enforced action that produced this outcome


class FilteringHandler:
    FORWARD_RETRIES = 4  # temporary upstream errors on already-acknowledged parts: ~4 s in all
    def __init__(
        self,
        config: ProxyConfig,
        forwarder: Forwarder,
        store: Store,
        outbox: Outbox,
        classifier: Any,  # classifier.batcher.DynamicBatcher (or anything with async classify)
        metrics: ProxyMetrics,
    ):
        self.config = config
        self.forwarder = forwarder
        self.store = store
        self.outbox = outbox
        self.classifier = classifier
        self.metrics = metrics
        self.pm = PipelineMetrics(metrics.registry)
        self.assembler = Assembler(
            store,
            timeout_s=config.multipart.timeout_s,
            max_pending=config.multipart.max_pending,
            metrics=self.pm,
            defer_release=True,  # parts leave the store only once the verdict is carried out
        )
        self.policy = self._build_policy(config)
        self.audit = AuditLog(config.audit.path, config.audit.text) if config.audit.enabled else None
        self._expiry_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        # Completing parts answered with an error, by proxy id: (status, enforced action, when).
        # The assembler remembers finished messages and reports a retransmitted part as a
        # "duplicate"; for these parts that must not turn into a silent OK (see handle_submit).
        self._refused: dict[str, tuple[int, str, float]] = {}

    @staticmethod
    def _build_policy(config: ProxyConfig) -> PolicyEngine:
        return PolicyEngine(config.policy, {c.system_id: c.policy for c in config.clients})

    def update(self, config: ProxyConfig) -> None:
        """SIGHUP: new policy and client overrides."""
        self.config = config
        self.policy = self._build_policy(config)

    async def start(self) -> None:
        n = await self.assembler.restore()
        if n:
            log.info("restored %d incomplete multipart messages from the store", n)
        self._expiry_task = asyncio.ensure_future(self._expiry_loop())

    async def close(self) -> None:
        if self._expiry_task:
            self._expiry_task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self.audit:
            self.audit.close()

    # ------------------------------------------------------------------ SubmitHandler
    async def handle_control(self, client: ClientConfig, conn: SmppConnection, pdu: Pdu) -> Pdu:
        return await self.forwarder.control(client, pdu)

    async def handle_submit(self, client: ClientConfig, conn: SmppConnection, pdu: Pdu) -> Pdu:
        proxy_id = self.forwarder.ids.next()
        try:
            res = await self.assembler.add(client.system_id, pdu, proxy_id)
        except Exception:
            log.exception("assembler failed; answering with a temporary error")
            return pdu.response(Status.RSYSERR)
        if res.kind == "held":
            return pdu.response(Status.ROK, message_id=res.proxy_id or proxy_id)
        if res.kind == "duplicate":
            refused = self._refused.get(res.proxy_id or "")
            if refused is not None:
                return await self._retry_refused(client, pdu, res.proxy_id or proxy_id, refused)
            return pdu.response(Status.ROK, message_id=res.proxy_id or proxy_id)
        if res.kind == "overflow":
            self.metrics.child(self.metrics.submits, client.system_id, "multipart_overflow").inc()
            return pdu.response(Status.RMSGQFUL)
        msg = res.message
        assert msg is not None
        completing = res.proxy_id or proxy_id
        out: _Outcome | None = None
        try:
            out = await self._process(client, msg, completing_proxy_id=completing)
            if out.status != Status.ROK and msg.key is not None and out.action != "tempfail":
                # before the key is released: a resubmission waiting on it must see this
                self._refused[completing] = (out.status, out.action, time.monotonic())
        finally:
            if msg.key is not None:
                if out is None or out.action == "tempfail":
                    # failed or tempfailed: hold the other parts again, so the client's retry
                    # of this part completes the message and re-runs the verdict
                    seq = next(p.seqnum for p in msg.parts if p.proxy_id == completing)
                    await self.assembler.reopen(msg.key, seq)
                else:
                    await self.assembler.release(msg.key)
        if out.status != Status.ROK:
            return pdu.response(out.status)
        return self.forwarder.client_resp(pdu, int(Status.ROK), out.proxy_id, out.resp)

    async def _retry_refused(
        self, client: ClientConfig, pdu: Pdu, proxy_id: str, refused: tuple[int, str, float]
    ) -> Pdu:
        """A client resubmits the completing part it was refused.

        If the message was to be forwarded and only the upstream failed (0x08, a full queue),
        the verdict stands: forward this part now. A blocked message stays blocked: the same
        status again, never a silent OK for a part that went nowhere.
        """
        status, action, _ = refused
        if action != "forward":
            return pdu.response(status)
        res = await self.forwarder.forward(pdu)
        if res.status != Status.ROK:
            return self.forwarder.client_resp(pdu, res.status, None, res.resp)
        await self.forwarder.record(client.system_id, pdu, proxy_id, "forwarded", res)
        self._refused.pop(proxy_id, None)
        self.metrics.child(self.metrics.submits, client.system_id, "forwarded").inc()
        return self.forwarder.client_resp(pdu, int(Status.ROK), proxy_id, res.resp)

    # ------------------------------------------------------------------ the pipeline
    async def classify(self, policy: ClientPolicy, msg: AssembledMessage) -> Verdict:
        first = msg.pdus[0].params
        src = str(first.get("source_addr", ""))
        dst = str(first.get("destination_addr", ""))
        pre = policy.pre_check(src, dst, msg.text)
        if pre is not None:
            return pre
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.config.classifier.timeout_ms / 1000.0
        try:
            pred = await self.classifier.classify(msg.text, deadline)
        except Overloaded:
            self.pm.classifier_errors.labels("overload").inc()
            return policy.on_error(overload=True)
        except Exception as exc:  # DeadlineExceeded, ClassifierError, BatcherClosed ...
            kind = type(exc).__name__
            log.warning("classification failed (%s): %s", kind, exc)
            self.pm.classifier_errors.labels(kind).inc()
            return policy.on_error(overload=False)
        self.pm.classify_latency.observe(time.perf_counter() - t0)
        return policy.decide(pred.label, dict(pred.probs))

    async def _process(
        self,
        client: ClientConfig,
        msg: AssembledMessage,
        completing_proxy_id: str | None,
    ) -> _Outcome:
        """Classify, decide and carry out; return what the completing part is answered."""
        policy = self.policy.for_client(client.system_id)
        verdict = await self.classify(policy, msg)
        label = verdict.label or "none"
        self.metrics.child(
            self.pm.messages, client.system_id, label, verdict.enforced, verdict.reason.split(":")[0]
        ).inc()
        if verdict.shadow:
            self.pm.shadow.labels(client.system_id, label, verdict.action).inc()
        if self.audit:
            self.audit.write(client.system_id, msg, verdict)
        if verdict.enforced == "forward":
            out = await self._forward(client, msg, completing_proxy_id)
        elif verdict.tempfail and completing_proxy_id is not None:
            # the classifier could not answer: the client retries later, nothing is final
            self.metrics.child(self.metrics.submits, client.system_id, "tempfail").inc()
            out = _Outcome(verdict.status, None, action="tempfail")
        elif verdict.action == "reject":
            out = await self._reject(client, msg, completing_proxy_id, verdict)
        else:
            out = await self._drop(client, msg, completing_proxy_id, verdict)
        started = msg.first_received_at or time.time()
        self.metrics.child(self.pm.e2e_latency, verdict.enforced).observe(max(0.0, time.time() - started))
        return out

    def _parts(self, msg: AssembledMessage) -> list[tuple[Pdu, str]]:
        return [(pdu, part.proxy_id) for pdu, part in zip(msg.pdus, msg.parts, strict=True)]

    async def _forward(
        self, client: ClientConfig, msg: AssembledMessage, completing: str | None
    ) -> _Outcome:
        result = _Outcome(int(Status.ROK), completing)
        for pdu, proxy_id in self._parts(msg):
            is_completing = proxy_id == completing
            res = await self.forwarder.forward(pdu)
            if not is_completing:
                # Already answered OK to the client: ride out a temporary upstream error
                # (throttling, full queue, no bind for a moment) before giving up on the part.
                delay = 0.25
                for _ in range(self.FORWARD_RETRIES):
                    if res.status not in TEMPORARY_STATUSES:
                        break
                    await asyncio.sleep(delay)
                    delay *= 2
                    res = await self.forwarder.forward(pdu)
            if res.status == Status.ROK:
                await self.forwarder.record(client.system_id, pdu, proxy_id, "forwarded", res)
                self.metrics.child(self.metrics.submits, client.system_id, "forwarded").inc()
                if is_completing:
                    result = _Outcome(int(Status.ROK), proxy_id, res.resp)
                continue
            self.metrics.child(self.metrics.submits, client.system_id, "upstream_error").inc()
            if is_completing:
                # The client hears the upstream's status (or 0x08) and will resubmit this part.
                result = _Outcome(res.status, None, res.resp)
            else:
                # Already answered OK: the client learns of the failure through a receipt.
                await self.forwarder.record(client.system_id, pdu, proxy_id, "failed")
                await self._synth_receipt(client, pdu, proxy_id, "UNDELIV", res.status)
        return result

    async def _reject(
        self, client: ClientConfig, msg: AssembledMessage, completing: str | None, verdict: Verdict
    ) -> _Outcome:
        for pdu, proxy_id in self._parts(msg):
            self.metrics.child(self.metrics.submits, client.system_id, "tempfail" if verdict.tempfail else "rejected").inc()
            if proxy_id == completing:
                continue  # answered with the reject status below
            await self.forwarder.record(client.system_id, pdu, proxy_id, "rejected")
            await self._synth_receipt(client, pdu, proxy_id, "REJECTD", verdict.status)
        return _Outcome(verdict.status, None, action="reject")

    async def _drop(
        self, client: ClientConfig, msg: AssembledMessage, completing: str | None, verdict: Verdict
    ) -> _Outcome:
        for pdu, proxy_id in self._parts(msg):
            self.metrics.child(self.metrics.submits, client.system_id, "dropped").inc()
            await self.forwarder.record(client.system_id, pdu, proxy_id, "dropped")
            if verdict.receipt:
                await self._synth_receipt(client, pdu, proxy_id, verdict.receipt, 0)
        return _Outcome(int(Status.ROK), completing, action="drop")

    async def _synth_receipt(
        self, client: ClientConfig, pdu: Pdu, proxy_id: str, stat: str, err: int
    ) -> None:
        if not int(pdu.params.get("registered_delivery", 0)) & 0x03:
            return
        p = pdu.params
        receipt = build_receipt(
            message_id=proxy_id,
            source_addr=str(p.get("source_addr", "")),
            source_addr_ton=int(p.get("source_addr_ton", 0)),
            source_addr_npi=int(p.get("source_addr_npi", 0)),
            destination_addr=str(p.get("destination_addr", "")),
            dest_addr_ton=int(p.get("dest_addr_ton", 0)),
            dest_addr_npi=int(p.get("dest_addr_npi", 0)),
            stat=stat,
            err=f"{err:03x}"[-3:],
            submitted_at=time.time(),
        )
        await self.outbox.put(client.system_id, receipt)
        self.metrics.child(self.metrics.dlr, "synthesized").inc()

    # ------------------------------------------------------------------ timeouts
    async def _expiry_loop(self) -> None:
        while True:
            nxt = self.assembler.next_deadline()
            delay = 1.0 if nxt is None else max(0.05, min(1.0, nxt - time.time()))
            await asyncio.sleep(delay)
            try:
                expired = await self.assembler.expire()
            except Exception:
                log.exception("multipart expiry failed")
                continue
            horizon = time.monotonic() - 2 * self.config.multipart.timeout_s
            for pid in [p for p, (_, _, t) in self._refused.items() if t < horizon]:
                del self._refused[pid]
            for msg in expired:
                self.pm.multipart_timeouts.inc()
                client = self._client(msg.client_id)
                if client is None:
                    log.error("expired parts of unknown client %s; forwarding", msg.client_id)
                    client = ClientConfig(system_id=msg.client_id, password="")
                task = asyncio.ensure_future(self._process_expired(client, msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _process_expired(self, client: ClientConfig, msg: AssembledMessage) -> None:
        try:
            await self._process(client, msg, None)
        except Exception:
            # the parts stay in the store: handled again after a restart
            log.exception("handling the expired message %s failed", msg.key)
            if msg.key is not None:
                await self.assembler.release(msg.key, delete=False)
            return
        if msg.key is not None:
            await self.assembler.release(msg.key)

    def _client(self, client_id: str) -> ClientConfig | None:
        return self.config.client(client_id)
