"""Prometheus metrics of the SMPP side, on a registry passed in (never the global one).

All names start with ``smsfw_``. The HTTP endpoint (``/metrics``, ``/healthz``, ``/readyz``) is
served by ``MetricsServer`` with prometheus-client's exposition code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.pdus = Counter(
            "smsfw_pdus_total",
            "SMPP PDUs by side (client/upstream), direction (in/out), command and command_status",
            ["side", "direction", "command", "status"],
            registry=r,
        )
        self.bound_sessions = Gauge(
            "smsfw_client_sessions", "Bound client sessions by client and bind type",
            ["client", "bind"], registry=r,
        )
        self.bind_failures = Counter(
            "smsfw_client_bind_failures_total", "Refused client binds by command_status",
            ["status"], registry=r,
        )
        self.upstream_sessions = Gauge(
            "smsfw_upstream_sessions", "Upstream SMPP sessions by upstream and state",
            ["upstream", "state"], registry=r,
        )
        self.submit_latency = Histogram(
            "smsfw_submit_latency_seconds",
            "Client submit_sm received to client submit_sm_resp sent",
            ["client"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_latency = Histogram(
            "smsfw_upstream_latency_seconds", "Upstream request to response",
            ["upstream"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.submits = Counter(
            "smsfw_submits_total", "Client submits by client and outcome",
            ["client", "outcome"], registry=r,
        )
        self.dlr = Counter(
            "smsfw_receipts_total",
            "Delivery receipts by event (received, relayed, queued, unmatched, synthesized, retried)",
            ["event"], registry=r,
        )
        self.mo = Counter(
            "smsfw_mo_total", "Mobile-originated messages by event (relayed, queued, unmatched)",
            ["event"], registry=r,
        )
        self.outbox_pending = Gauge(
            "smsfw_outbox_pending", "Receipts and MO messages waiting in the outbox", registry=r
        )
        self.protocol_errors = Counter(
            "smsfw_protocol_errors_total", "Malformed or illegal PDUs by side and reason",
            ["side", "reason"], registry=r,
        )

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, cached: labels() costs several µs per call."""
        key = (id(metric), values)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*values)
        return c

    def pdu(self, side: str, direction: str, command: str, status: int) -> None:
        # four PDUs per message on the hot path: the label children come from the cache
        self.child(self.pdus, side, direction, command, f"{status:#04x}").inc()


class MetricsServer:
    """A tiny asyncio HTTP server: /metrics, /healthz, /readyz. No thread, no framework."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        ready: Callable[[], tuple[bool, str]] | None = None,
    ):
        self.registry = registry
        self.host = host
        self.port = port
        self._ready = ready
        self._server: asyncio.base_events.Server | None = None

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while True:  # skip headers
                h = await asyncio.wait_for(reader.readline(), 10)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            if path == "/metrics":
                body = generate_latest(self.registry)
                status, ctype = "200 OK", CONTENT_TYPE_LATEST
            elif path == "/healthz":
                body, status, ctype = b"ok\n", "200 OK", "text/plain"
            elif path == "/readyz":
                ok, why = self._ready() if self._ready else (True, "ready")
                body = (why + "\n").encode()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype = "text/plain"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
