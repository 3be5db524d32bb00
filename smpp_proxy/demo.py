"""``smpp-proxy demo``: the SMSC simulator and the proxy in one process, on the example config.

The simulator listens where the config's first upstream points (so the proxy binds to it); the
proxy listens on ``server.port``. Point any SMPP client at the proxy to see it work.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from .app import ProxyApp
from .config import load_config
from .simulator import Simulator, SimulatorConfig

log = logging.getLogger(__name__)


async def run_demo(config_path: str) -> int:
    cfg = load_config(config_path)
    up = cfg.upstreams[0]
    sim = Simulator(SimulatorConfig(host=up.host, port=up.port))
    await sim.start()
    log.info("SMSC simulator listening on %s:%d", up.host, sim.port)
    app = ProxyApp(cfg, config_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    await app.start()
    log.info(
        "proxy ready: bind to %s:%d as one of %s",
        cfg.server.host, cfg.server.port, [c.system_id for c in cfg.clients],
    )
    try:
        await app.wait()
    finally:
        await app.stop()
        await sim.stop()
    return 0
