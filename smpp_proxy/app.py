"""Wiring: config → store, metrics, upstream pool, forwarder, relay, server, metrics endpoint.

``ProxyApp`` owns the lifecycle: start in dependency order, SIGHUP reload (clients and policy;
binds stay up; an invalid file is refused and the running config kept), graceful stop on
SIGTERM/SIGINT (stop accepting, let in-flight submits finish, unbind everyone, close the store).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from prometheus_client import CollectorRegistry

from .config import ConfigError, ProxyConfig, load_config
from .forwarder import Forwarder, PassThroughHandler
from .ids import MessageIdGenerator
from .metrics import MetricsServer, ProxyMetrics
from .relay import DeliveryRelay, Outbox
from .server import ClientRegistry, SmppServer
from .store import Store, open_store
from .upstream import UpstreamPool

log = logging.getLogger(__name__)


class ProxyApp:
    def __init__(self, config: ProxyConfig, config_path: str | Path | None = None):
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.registry = CollectorRegistry()
        self.metrics = ProxyMetrics(self.registry)
        self.store: Store | None = None
        self.pool: UpstreamPool | None = None
        self.server: SmppServer | None = None
        self.metrics_server: MetricsServer | None = None
        self.outbox: Outbox | None = None
        self.relay: DeliveryRelay | None = None
        self.forwarder: Forwarder | None = None
        self.clients = ClientRegistry(config)
        self._stop = asyncio.Event()
        self._purge_task: asyncio.Task | None = None
        self.handler = None  # the SubmitHandler (pass-through or filtering pipeline)
        self.batcher = None  # classifier.batcher.DynamicBatcher when the classifier is enabled
        self.pipeline = None  # FilteringHandler when the classifier is enabled

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        cfg = self.config
        self.store = open_store(cfg.store.url)
        await self.store.open()
        self.outbox = Outbox(cfg, self.store, self.clients, self.metrics)
        self.relay = DeliveryRelay(cfg, self.store, self.outbox, self.metrics)
        self.pool = UpstreamPool(cfg.upstreams, self.metrics, self.relay.on_deliver)
        ids = MessageIdGenerator(cfg.server.node_id, cfg.server.message_id_format)
        self.forwarder = Forwarder(cfg, self.pool, self.store, ids, self.metrics)
        self.handler = await self._make_handler()
        self.server = SmppServer(cfg, self.handler, self.clients, self.metrics)
        await self.pool.start()
        await self.outbox.start()
        await self.server.start()
        if cfg.metrics.enabled:
            self.metrics_server = MetricsServer(
                self.registry, cfg.metrics.host, cfg.metrics.port, self.readiness
            )
            await self.metrics_server.start()
            log.info("metrics on http://%s:%d/metrics", cfg.metrics.host, self.metrics_server.bound_port)
        self._purge_task = asyncio.ensure_future(self._purge_loop())

    async def _make_handler(self):
        assert self.forwarder is not None and self.store is not None and self.outbox is not None
        ccfg = self.config.classifier
        if not ccfg.enabled:
            log.warning("classifier disabled: every message is forwarded unfiltered")
            return PassThroughHandler(self.forwarder)
        from classifier.batcher import BatcherConfig, DynamicBatcher
        from classifier.runner import ModelRunner, RunnerConfig

        from .pipeline import FilteringHandler

        model_dir = Path(ccfg.model_dir)
        if not model_dir.is_absolute() and not model_dir.exists():
            # relative paths are tried against the working directory, then the repository
            alt = Path(__file__).resolve().parent.parent / model_dir
            model_dir = alt if alt.exists() else model_dir
        rcfg = RunnerConfig(
            model_dir=model_dir,
            pth_path=Path(ccfg.pth_path) if ccfg.pth_path else None,
            device=ccfg.device,
            fp16=ccfg.fp16,
            max_length=ccfg.max_length,
            compile=ccfg.compile,
            label_map=dict(ccfg.label_map),
            num_threads=ccfg.num_threads,
        )
        log.info("loading classifier model from %s", model_dir)
        # model loading is slow torch work: keep it off the event loop
        runner = await asyncio.to_thread(ModelRunner, rcfg)
        self.batcher = DynamicBatcher(
            runner,
            BatcherConfig(
                max_batch_size=ccfg.max_batch_size,
                max_batch_tokens=ccfg.max_batch_tokens,
                max_queue=ccfg.max_queue,
                max_wait_ms=ccfg.max_wait_ms,
            ),
            registry=self.registry,
        )
        await self.batcher.start()
        self.pipeline = FilteringHandler(
            self.config, self.forwarder, self.store, self.outbox, self.batcher, self.metrics
        )
        await self.pipeline.start()
        return self.pipeline

    def readiness(self) -> tuple[bool, str]:
        if self.config.classifier.enabled and (self.batcher is None or not self.batcher.running):
            return False, "classifier not loaded"
        if self.pool is None or self.pool.bound_count() == 0:
            return False, "no upstream bound"
        return True, "ready"

    async def _purge_loop(self) -> None:
        assert self.store is not None
        import time

        while True:
            await asyncio.sleep(self.config.store.purge_interval_s)
            try:
                n = await self.store.purge_expired(time.time())
                if n:
                    log.info("purged %d expired message records", n)
            except Exception:
                log.exception("purge failed")

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        if self._purge_task:
            self._purge_task.cancel()
        if self.server:
            await self.server.stop(timeout=self.config.server.response_timeout_s)
        if self.pipeline:
            await self.pipeline.close()
        if self.batcher:
            await self.batcher.close()
        if self.outbox:
            await self.outbox.close()
        if self.pool:
            await self.pool.close()
        if self.metrics_server:
            await self.metrics_server.close()
        if self.store:
            await self.store.close()

    # ------------------------------------------------------------------ reload
    def reload(self) -> bool:
        """Re-read the config file; apply clients (and policy); keep the old one if invalid."""
        if self.config_path is None:
            log.warning("SIGHUP: no config file to reload")
            return False
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: new configuration refused, keeping the running one:\n%s", exc)
            return False
        self.apply_config(new)
        log.info("SIGHUP: configuration reloaded from %s", self.config_path)
        return True

    def apply_config(self, new: ProxyConfig) -> None:
        self.config = new
        self.clients.update(new)
        if self.relay:
            self.relay.update(new)
        if self.pipeline:
            self.pipeline.update(new)
        if self.server:
            self.server.config = new


async def run_app(config: ProxyConfig, config_path: str | Path | None) -> int:
    app = ProxyApp(config, config_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    await app.start()
    try:
        await app.wait()
    finally:
        log.info("shutting down")
        await app.stop()
    return 0
