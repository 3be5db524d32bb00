"""Forwarding client requests upstream and mapping message ids.

``Forwarder.forward`` sends a copy of the client's PDU (every field and TLV preserved, only the
sequence number changes) to the upstream pool. On success the upstream's message id is stored
against a fresh proxy id *before* the client hears about it, so a crash after the client's
resp can never orphan a receipt. Upstream errors reach the client unchanged; no upstream or no
answer in time becomes ESME_RSYSERR (0x08), a temporary error the client retries.

``PassThroughHandler`` is the SubmitHandler used when no filtering pipeline is configured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .config import ClientConfig, ProxyConfig
from .constants import CommandId, Status
from .ids import MessageIdGenerator
from .metrics import ProxyMetrics
from .pdu import Pdu
from .store import GroupCommitter, MessageRecord, Store
from .transport import ConnectionLost, RequestTimeout, SmppConnection
from .upstream import NoUpstream, UpstreamPool

log = logging.getLogger(__name__)

RQUERYFAIL = 0x67
_CONTROL_FAIL = {
    int(CommandId.QUERY_SM): RQUERYFAIL,
    int(CommandId.CANCEL_SM): int(Status.RCANCELFAIL),
    int(CommandId.REPLACE_SM): int(Status.RREPLACEFAIL),
}


@dataclass
class ForwardResult:
    status: int
    upstream: str | None = None
    upstream_id: str | None = None
    resp: Pdu | None = None


class Forwarder:
    def __init__(
        self,
        config: ProxyConfig,
        pool: UpstreamPool,
        store: Store,
        ids: MessageIdGenerator,
        metrics: ProxyMetrics | None = None,
    ):
        self.config = config
        self.pool = pool
        self.store = store
        self.ids = ids
        self.metrics = metrics
        self.saver = GroupCommitter(store)  # id mappings committed in groups, before the resp

    def new_record(self, client_id: str, pdu: Pdu, proxy_id: str | None = None) -> MessageRecord:
        now = time.time()
        p = pdu.params
        dst = p.get("destination_addr", "")
        if not dst and isinstance(p.get("dest_addresses"), list) and p["dest_addresses"]:
            first = p["dest_addresses"][0]
            dst = first.get("destination_addr", "") or first.get("dl_name", "")
        return MessageRecord(
            proxy_id=proxy_id or self.ids.next(),
            client_id=client_id,
            source_addr=str(p.get("source_addr", "")),
            destination_addr=str(dst),
            registered_delivery=int(p.get("registered_delivery", 0)),
            created_at=now,
            expires_at=now + self.config.store.message_ttl_s,
        )

    async def forward(self, pdu: Pdu, upstream: str | None = None) -> ForwardResult:
        """Send a copy of ``pdu`` upstream and wait for the answer."""
        try:
            name, resp, _ = await self.pool.submit(
                pdu.copy(), wait=self.config.server.response_timeout_s, upstream=upstream
            )
        except (NoUpstream, RequestTimeout, ConnectionLost) as exc:
            log.warning("forward %s failed: %s", pdu.name, exc)
            return ForwardResult(int(Status.RSYSERR))
        if resp.command_id == CommandId.GENERIC_NACK:
            # The upstream could not even parse it: a temporary failure from the client's view
            # unless it says the command itself is bad.
            status = resp.command_status or int(Status.RSYSERR)
            return ForwardResult(status, name, None, resp)
        mid = resp.params.get("message_id") if resp.command_status == Status.ROK else None
        return ForwardResult(resp.command_status, name, mid, resp)

    async def submit(self, client: ClientConfig, pdu: Pdu) -> Pdu:
        """Forward a client submit and build its response (the pass-through path)."""
        res = await self.forward(pdu)
        outcome = "forwarded" if res.status == Status.ROK else (
            "tempfail" if res.upstream is None else "upstream_error"
        )
        if self.metrics:
            self.metrics.child(self.metrics.submits, client.system_id, outcome).inc()
        if res.status != Status.ROK:
            return self.client_resp(pdu, res.status, None, res.resp)
        rec = await self.record(client.system_id, pdu, self.ids.next(), "forwarded", res)
        return self.client_resp(pdu, int(Status.ROK), rec.proxy_id, res.resp)

    async def record(
        self,
        client_id: str,
        pdu: Pdu,
        proxy_id: str,
        status: str,
        res: ForwardResult | None = None,
    ) -> MessageRecord:
        """Persist what became of one client PDU (group-committed); with ``res`` the upstream
        id mapping that receipts are matched by."""
        rec = self.new_record(client_id, pdu, proxy_id)
        rec.status = status
        if res is not None:
            rec.upstream, rec.upstream_id = res.upstream, res.upstream_id
        await self.saver.save(rec)
        return rec

    @staticmethod
    def client_resp(pdu: Pdu, status: int, proxy_id: str | None, upstream_resp: Pdu | None) -> Pdu:
        """The client's resp: our id on success, the upstream's status and TLVs passed on."""
        if pdu.command_id == CommandId.SUBMIT_MULTI and status == Status.ROK and upstream_resp:
            resp = pdu.response(status)
            resp.params.update(upstream_resp.params)
            resp.params["message_id"] = proxy_id or ""
        elif status == Status.ROK:
            resp = pdu.response(status, message_id=proxy_id or "")
        else:
            resp = pdu.response(status)
        if upstream_resp is not None and upstream_resp.command_id != CommandId.GENERIC_NACK:
            resp.tlvs = [t for t in upstream_resp.tlvs]
        return resp

    async def control(self, client: ClientConfig, pdu: Pdu) -> Pdu:
        """query_sm / cancel_sm / replace_sm: translate our id to the upstream's and back."""
        fail = _CONTROL_FAIL[pdu.command_id]
        proxy_id = str(pdu.params.get("message_id", ""))
        rec = await self.store.get_message(proxy_id) if proxy_id else None
        if rec is None or rec.client_id != client.system_id:
            return pdu.response(int(Status.RINVMSGID))
        if rec.upstream is None or rec.upstream_id is None:
            # Never reached an upstream (blocked or dropped by policy): nothing to act on.
            return pdu.response(fail)
        fwd = pdu.copy()
        fwd.params["message_id"] = rec.upstream_id
        res = await self.forward(fwd, upstream=rec.upstream)
        if res.resp is None:
            return pdu.response(res.status)
        resp = pdu.response(res.status)
        if res.resp.command_id == pdu.command_id | 0x80000000:
            resp.params.update(res.resp.params)
            resp.tlvs = list(res.resp.tlvs)
        if "message_id" in resp.params:
            resp.params["message_id"] = proxy_id
        return resp


class PassThroughHandler:
    """SubmitHandler that forwards everything (no classification)."""

    def __init__(self, forwarder: Forwarder):
        self.forwarder = forwarder

    async def handle_submit(self, client: ClientConfig, conn: SmppConnection, pdu: Pdu) -> Pdu:
        return await self.forwarder.submit(client, pdu)

    async def handle_control(self, client: ClientConfig, conn: SmppConnection, pdu: Pdu) -> Pdu:
        return await self.forwarder.control(client, pdu)
