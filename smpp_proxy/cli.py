"""Command line: ``smpp-proxy run | check-config | simulate-smsc | demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from .config import ConfigError, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "proxy.yaml"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _install_uvloop() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.config}: OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from .app import run_app

    _install_uvloop()
    return asyncio.run(run_app(cfg, args.config))


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulator + proxy in one process group: the README's first command."""
    from .demo import run_demo

    _setup_logging(args.log_level)
    _install_uvloop()
    return asyncio.run(run_demo(args.config))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate-smsc":
        from .simulator import main as sim_main

        return sim_main(argv[1:])
    p = argparse.ArgumentParser(prog="smpp-proxy", description="SMPP 3.4 filtering proxy")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("run", "run the proxy"),
        ("check-config", "validate a configuration file"),
        ("demo", "run the SMSC simulator and the proxy together on the example config"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="YAML configuration")
        sp.add_argument("--log-level", default="info")
    sub.add_parser("simulate-smsc", help="run the SMSC simulator (see simulate-smsc --help)")
    args = p.parse_args(argv)
    return {"run": cmd_run, "check-config": cmd_check_config, "demo": cmd_demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
