"""Helpers to run the real proxy in tests: in-process (ProxyApp) or as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from smpp_proxy.app import ProxyApp
from smpp_proxy.config import parse_config

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_config_dict(
    upstream_port: int,
    store_path: Path,
    *,
    port: int = 0,
    metrics_port: int | None = None,
    classifier: bool = False,
    clients: list[dict[str, Any]] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "response_timeout_s": 2.0,
            "enquire_link_interval_s": 30,
            "bind_timeout_s": 30,
        },
        "clients": clients
        if clients is not None
        else [
            {"system_id": "acme", "password": "secret", "allowed_ips": ["127.0.0.0/8"],
             "max_binds": 4, "window": 50, "mo_prefixes": ["4470"]},
            {"system_id": "other", "password": "pw2", "max_binds": 2, "window": 10,
             "mo_prefixes": ["4471"]},
        ],
        "upstreams": [
            {"name": "sim", "host": "127.0.0.1", "port": upstream_port, "system_id": "proxy",
             "password": "pw", "binds": 2, "window": 100, "response_timeout_s": 2.0,
             "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
        ],
        "store": {"url": f"sqlite:///{store_path}"},
        "dlr": {"retry_min_s": 0.2, "retry_max_s": 2.0, "unmatched_grace_s": 1.0},
        "metrics": {"enabled": metrics_port is not None, "host": "127.0.0.1",
                    "port": metrics_port or 0},
        "classifier": {"enabled": classifier},
    }
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


async def start_proxy(cfg: dict[str, Any], config_path: Path | None = None) -> ProxyApp:
    if config_path is not None:
        config_path.write_text(yaml.safe_dump(cfg))
    app = ProxyApp(parse_config(yaml.safe_dump(cfg)), config_path)
    await app.start()
    return app


async def wait_until(pred, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


async def wait_upstream_bound(app: ProxyApp, n: int = 1, timeout: float = 10.0) -> None:
    await wait_until(lambda: app.pool is not None and app.pool.bound_count() >= n, timeout)


class ProxyProcess:
    """The proxy as a real OS process (for kill -9 / SIGHUP tests)."""

    def __init__(self, config_path: Path, log_path: Path):
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smpp_proxy", "run", "--config", str(self.config_path)],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self, "_log"):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not listening")


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """(status code, body) of GET ``path`` on 127.0.0.1:``port`` (the metrics endpoint)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def metrics_families(app: ProxyApp) -> dict:
    """The app's /metrics, parsed with prometheus_client's parser, by family name."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = await http_get(app.metrics_server.bound_port, "/metrics")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}
