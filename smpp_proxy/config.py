"""Configuration: the YAML file, validated with pydantic.

Every error names the YAML path of the offending value (``clients[1].password``) and, when the
file was read from disk, its line, so an operator can fix a file without reading the code.
Unknown keys are errors too: a misspelt ``throughput`` must not silently mean "unlimited".
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .policy import PolicyConfig, PolicyOverride


class ConfigError(Exception):
    """The configuration is invalid. ``errors`` holds one ``"path: message"`` line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"invalid configuration {source}:\n  " + "\n  ".join(errors))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=0, le=65535)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ServerConfig(_Model):
    host: str = "0.0.0.0"
    port: Port = 2775
    system_id: str = Field("smsfw", max_length=15)
    max_pdu_size: int = Field(65536, ge=256, le=1_048_576)
    bind_timeout_s: PositiveFloat = 30.0
    enquire_link_interval_s: PositiveFloat = 30.0
    response_timeout_s: PositiveFloat = 10.0
    # A proxy-assigned message id: 16 lowercase hex digits, or up to 20 decimal digits for
    # legacy ESMEs that store ids as integers.
    message_id_format: Literal["hex", "decimal"] = "hex"
    node_id: int = Field(0, ge=0, le=1023, description="distinguishes proxies sharing one store")


class ClientConfig(_Model):
    system_id: str = Field(min_length=1, max_length=15)
    password: str = Field(max_length=8)
    allowed_ips: list[str] = Field(default_factory=list, description="addresses or CIDRs; empty: any")
    max_binds: int = Field(4, ge=1)
    window: int = Field(64, ge=1, description="unanswered submit_sm per bind")
    throughput: float = Field(0, ge=0, description="submit_sm/s shared by all binds; 0: unlimited")
    mo_prefixes: list[str] = Field(default_factory=list)
    policy: PolicyOverride | None = Field(None, description="overrides of the global policy")

    @field_validator("allowed_ips")
    @classmethod
    def _check_ips(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from exc
        return v

    @field_validator("mo_prefixes")
    @classmethod
    def _check_prefixes(cls, v: list[str]) -> list[str]:
        for item in v:
            if not re.fullmatch(r"\+?[0-9A-Za-z]*", item):
                raise ValueError(f"{item!r} is not an address prefix")
        return v

    def ip_allowed(self, ip: str) -> bool:
        if not self.allowed_ips:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in ipaddress.ip_network(n, strict=False) for n in self.allowed_ips)


class UpstreamConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str
    port: Port = 2775
    system_id: str = Field(max_length=15)
    password: str = Field("", max_length=8)
    system_type: str = Field("", max_length=12)
    bind_mode: Literal["transceiver", "transmitter_receiver"] = "transceiver"
    binds: int = Field(1, ge=1, le=64)
    window: int = Field(64, ge=1)
    priority: int = Field(0, description="lower is preferred; equal priorities share load")
    enquire_link_interval_s: PositiveFloat = 30.0
    response_timeout_s: PositiveFloat = 10.0
    connect_timeout_s: PositiveFloat = 5.0
    reconnect_min_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 60.0

    @model_validator(mode="after")
    def _check_backoff(self) -> UpstreamConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class StoreConfig(_Model):
    url: str = "sqlite:///var/smsfw.db"
    message_ttl_s: PositiveFloat = 3 * 24 * 3600.0
    purge_interval_s: PositiveFloat = 300.0


class DlrConfig(_Model):
    retry_min_s: PositiveFloat = 1.0
    retry_max_s: PositiveFloat = 300.0
    # how long a receipt whose id is not (yet) known is retried before it counts as unmatched
    unmatched_grace_s: float = Field(2.0, ge=0)
    unmatched_mo_status: int = Field(0x0B, ge=0, le=0xFFFFFFFF)


class ClassifierConfig(_Model):
    enabled: bool = True
    model_dir: str = "classifier/models/default"
    pth_path: str | None = None
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    fp16: bool = True
    max_length: int = Field(128, ge=8, le=512)
    compile: bool = False
    num_threads: int | None = Field(None, ge=1)
    label_map: dict[str, Literal["ham", "spam", "phishing"]] = Field(default_factory=dict)
    max_batch_size: int = Field(64, ge=1)
    max_batch_tokens: int = Field(8192, ge=16)
    max_queue: int = Field(2048, ge=1)
    max_wait_ms: float = Field(0.0, ge=0)
    timeout_ms: float = Field(1000.0, gt=0, description="deadline of one classification")


class MultipartConfig(_Model):
    timeout_s: PositiveFloat = 60.0
    max_pending: int = Field(10000, ge=1, description="held parts, all clients together")


class AuditConfig(_Model):
    enabled: bool = False
    path: str = "var/audit.jsonl"
    text: Literal["full", "hash", "none"] = "hash"


class MetricsConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9100


class ProxyConfig(_Model):
    server: ServerConfig = ServerConfig()
    clients: list[ClientConfig] = Field(default_factory=list)
    upstreams: list[UpstreamConfig] = Field(min_length=1)
    store: StoreConfig = StoreConfig()
    dlr: DlrConfig = DlrConfig()
    metrics: MetricsConfig = MetricsConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    multipart: MultipartConfig = MultipartConfig()
    policy: PolicyConfig = PolicyConfig()
    audit: AuditConfig = AuditConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> ProxyConfig:
        seen: set[str] = set()
        for c in self.clients:
            if c.system_id in seen:
                raise ValueError(f"duplicate client system_id {c.system_id!r}")
            seen.add(c.system_id)
        names = [u.name for u in self.upstreams]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate upstream name(s) {sorted(dup)}")
        return self

    def client(self, system_id: str) -> ClientConfig | None:
        for c in self.clients:
            if c.system_id == system_id:
                return c
        return None


# ---------------------------------------------------------------------------- loading

def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _node_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the YAML node at ``loc``, or of its nearest existing parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def parse_config(text: str, source: str = "<string>") -> ProxyConfig:
    """Parse and validate YAML text; raise ConfigError with YAML paths on any problem."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"YAML syntax error: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping"])
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _node_line(root, loc)
            where = f" (line {line})" if line is not None else ""
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            errors.append(f"{_format_loc(loc)}{where}: {msg}")
        raise ConfigError(source, errors) from None


def load_config(path: str | Path) -> ProxyConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read file: {exc}"]) from exc
    return parse_config(text, str(p))
