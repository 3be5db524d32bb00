"""The proxy with the whole filtering pipeline but a constant verdict instead of the model.

Benchmark aid only (``bench/load.py --classifier stub``): it measures what the pipeline costs
(assembler, store, policy, metrics) apart from model inference. It is never used by the product.

    python bench/stub_proxy.py --config proxy.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier.runner import Prediction  # noqa: E402
from smpp_proxy.app import ProxyApp  # noqa: E402
from smpp_proxy.config import load_config  # noqa: E402
from smpp_proxy.pipeline import FilteringHandler  # noqa: E402

HAM = Prediction("ham", {"ham": 1.0, "spam": 0.0, "phishing": 0.0})


class ConstantClassifier:
    """Answers every text with ``ham`` at once (after one loop turn, like a real future)."""

    running = True

    async def classify(self, text: str, deadline: float | None = None) -> Prediction:
        await asyncio.sleep(0)
        return HAM

    async def close(self) -> None:
        return None


class StubVerdictApp(ProxyApp):
    async def _make_handler(self):
        self.batcher = ConstantClassifier()
        self.pipeline = FilteringHandler(
            self.config, self.forwarder, self.store, self.outbox, self.batcher, self.metrics
        )
        await self.pipeline.start()
        return self.pipeline


async def main(config_path: str) -> int:
    cfg = load_config(config_path)
    cfg = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"enabled": True})})
    app = StubVerdictApp(cfg, config_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    await app.start()
    try:
        await app.wait()
    finally:
        await app.stop()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--log-level", default="warning")
    a = ap.parse_args()
    logging.basicConfig(level=getattr(logging, a.log_level.upper()))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main(a.config)))
