"""Static checks of the deployment files (Dockerfile, docker-compose.yml, deploy/, the container
config). Docker is not needed: the files are parsed and cross-checked against each other and
against the code (config schema, registered Prometheus metrics).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from classifier.metrics import BatcherMetrics
from smpp_proxy.config import ProxyConfig, load_config
from smpp_proxy.metrics import ProxyMetrics
from smpp_proxy.pipeline import PipelineMetrics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKER_CONFIG = ROOT / "config" / "proxy.docker.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "smsfw.json"

# labels Prometheus attaches to every scraped series (job, instance) or that the scrape config
# adds (static_configs labels): allowed in dashboard expressions besides the metrics' own labels
TARGET_LABELS = {"job", "instance"}


# ----------------------------------------------------------------------------- helpers


def _yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _provisioning_files(kind: str) -> list[Path]:
    files = sorted((GRAFANA_PROVISIONING / kind).glob("*.y*ml"))
    assert files, f"no Grafana {kind} provisioning file under {GRAFANA_PROVISIONING / kind}"
    return files


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def cfg() -> ProxyConfig:
    return load_config(DOCKER_CONFIG)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _volumes(service: dict) -> list[tuple[str, str, str]]:
    """(type, source, target) of a service's volumes, short or long syntax."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            source, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", parts[0])
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source, target = v.get("source", ""), v["target"]
            kind = v.get("type", "volume")
        out.append((kind, source, target))
    return out


def _container_to_repo(service: dict, container_path: str) -> Path | None:
    """The repository path a bind mount of ``service`` puts at ``container_path``."""
    p = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for kind, source, target in _volumes(service):
        if kind != "bind":
            continue
        t = PurePosixPath(target)
        if p == t or t in p.parents:
            rel = p.relative_to(t)
            host = (ROOT / source / rel).resolve()
            if best is None or len(t.parts) > best[0]:
                best = (len(t.parts), host)
    return best[1] if best else None


def _ports(service: dict) -> set[int]:
    """Container ports a service publishes."""
    out = set()
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.add(int(p["target"]))
        else:
            out.add(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    return out


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    return out


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON array) form: {args}"
    return value


# ----------------------------------------------------------------------------- metrics in the code


def exported_series() -> dict[str, set[str]]:
    """Every series name the proxy can expose -> the label names it carries.

    Built from the metric classes themselves, registered on one fresh registry as the app does
    (ProxyMetrics, PipelineMetrics, BatcherMetrics), so the dashboard is checked against the code,
    not against a list kept by hand.
    """
    registry = CollectorRegistry()
    holders = [ProxyMetrics(registry), PipelineMetrics(registry), BatcherMetrics(registry)]

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: dict[str, set[str]] = {}
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)

    # label names of metrics that have no child yet (no samples): from the metric objects
    for holder in holders:
        for metric in vars(holder).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            labelnames = set(metric._labelnames)
            for family in metric.collect():
                for suffix in suffixes.get(family.type, ("",)):
                    if family.name + suffix in names:
                        names[family.name + suffix] |= labelnames
    for name in names:
        if name.endswith("_bucket"):
            names[name].add("le")
    assert len(names) > 20, sorted(names)
    return names


@pytest.fixture(scope="module")
def code_metrics() -> dict[str, set[str]]:
    return exported_series()


# ----------------------------------------------------------------------------- parsing


def test_yaml_files_parse():
    files = [COMPOSE, PROMETHEUS, DOCKER_CONFIG]
    files += _provisioning_files("datasources") + _provisioning_files("dashboards")
    for path in files:
        data = _yaml(path)
        assert isinstance(data, dict), f"{path.relative_to(ROOT)} is not a YAML mapping"


def test_dashboard_json_parses(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["panels"], "dashboard has no panels"
    ids = [p["id"] for p in _all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_container_config_validates(cfg):
    # the same loader `smpp-proxy check-config` and `smpp-proxy run` use
    assert cfg.server.host == "0.0.0.0"
    assert cfg.metrics.enabled and cfg.metrics.host == "0.0.0.0"
    assert cfg.store.url.startswith("sqlite:////var/lib/smsfw/")
    assert cfg.audit.enabled and cfg.audit.text == "hash"
    assert PurePosixPath(cfg.audit.path).parent == PurePosixPath("/var/lib/smsfw")
    assert cfg.classifier.device == "cpu"


# ----------------------------------------------------------------------------- compose


def test_compose_services(services):
    assert {"smsc", "proxy", "prometheus", "grafana"} <= set(services)
    smsc = _command(services["smsc"])
    assert smsc[0] == "simulate-smsc"
    assert _option(smsc, "--host") == "0.0.0.0"
    assert _option(smsc, "--receipt-delay") is not None
    assert "smsc" in services["proxy"]["depends_on"]
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    env = services["grafana"]["environment"]
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert 3000 in _ports(services["grafana"])


def test_compose_references_exist(compose, services):
    declared_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            ctx = (ROOT / context).resolve()
            assert ctx.is_dir(), f"{name}: build context {context} missing"
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (ctx / dockerfile).is_file(), f"{name}: {dockerfile} missing"
        for kind, source, _target in _volumes(svc):
            if kind == "bind":
                assert (ROOT / source).exists(), f"{name}: bind mount source {source} missing"
            else:
                assert source in declared_volumes, f"{name}: volume {source!r} not declared"


def test_proxy_service_matches_config(services, cfg):
    proxy = services["proxy"]
    # the SMPP and metrics ports of the container config are published
    assert {cfg.server.port, cfg.metrics.port} <= _ports(proxy)
    # the store and the audit log are on a volume
    assert "/var/lib/smsfw" in {t for _, _, t in _volumes(proxy)}
    # the config the proxy runs is this file (bind-mounted, or baked into the image under /app)
    argv = _command(proxy) or _exec_form(dict(_dockerfile_instructions())["CMD"])
    config_path = _option(argv, "--config") or _option(argv, "-c")
    assert config_path is not None
    host = _container_to_repo(proxy, config_path)
    if host is None:
        assert config_path.startswith("/app/")
        host = ROOT / config_path.removeprefix("/app/")
    assert host.resolve() == DOCKER_CONFIG.resolve()


def test_upstream_is_the_simulator_service(services, cfg):
    smsc = _command(services["smsc"])
    assert len(cfg.upstreams) == 1
    up = cfg.upstreams[0]
    assert up.host == "smsc" and up.host in services
    assert int(_option(smsc, "--port")) == up.port
    if _option(smsc, "--system-id") is not None:
        assert _option(smsc, "--system-id") == up.system_id
    if _option(smsc, "--password") is not None:
        assert _option(smsc, "--password") == up.password


# ----------------------------------------------------------------------------- prometheus


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert m, f"unsupported duration {duration!r}"
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def test_prometheus_scrapes_proxy_metrics_port(services, cfg):
    mounted = _container_to_repo(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert mounted == PROMETHEUS.resolve()
    prom = _yaml(PROMETHEUS)
    expected = f"proxy:{cfg.metrics.port}"
    jobs = [
        job
        for job in prom["scrape_configs"]
        if any(expected in sc.get("targets", []) for sc in job.get("static_configs", []))
    ]
    assert jobs, f"no scrape job targets {expected}"
    job = jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    interval = job.get("scrape_interval", prom.get("global", {}).get("scrape_interval"))
    timeout = job.get("scrape_timeout", prom.get("global", {}).get("scrape_timeout", "10s"))
    assert interval == "5s"
    # Prometheus refuses a scrape_timeout longer than the scrape_interval
    assert _seconds(timeout) <= _seconds(interval)
    assert "proxy" in services


# ----------------------------------------------------------------------------- grafana


def _datasource_uid() -> str:
    uids = []
    for path in _provisioning_files("datasources"):
        for ds in _yaml(path).get("datasources", []):
            if ds["type"] == "prometheus":
                assert ds["url"] == "http://prometheus:9090"
                uids.append(ds["uid"])
    assert len(uids) == 1, uids
    return uids[0]


def test_grafana_provisioning_mounted(services):
    grafana = services["grafana"]
    host = _container_to_repo(grafana, "/etc/grafana/provisioning")
    assert host == GRAFANA_PROVISIONING.resolve()


def test_dashboard_provider_path_holds_the_dashboard(services):
    grafana = services["grafana"]
    paths = []
    for path in _provisioning_files("dashboards"):
        for provider in _yaml(path).get("providers", []):
            assert provider["type"] == "file"
            container_dir = provider["options"]["path"]
            host = _container_to_repo(grafana, container_dir)
            assert host is not None, f"{container_dir} is not mounted into the grafana service"
            assert host.is_dir(), f"{container_dir} -> {host} missing"
            paths.append(host)
    assert DASHBOARD.resolve().parent in paths
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert _container_to_repo(grafana, home) == DASHBOARD.resolve()


def _all_panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_datasource_uid_matches_provisioning(dashboard):
    uid = _datasource_uid()
    seen = 0
    for panel in _all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for t in panel["targets"]:
            assert t.get("datasource", {"uid": uid})["uid"] == uid, panel["title"]
            seen += 1
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "query":
            assert var["datasource"]["uid"] == uid
    assert seen


# ----------------------------------------------------------------------------- dashboard vs code

_METRIC_RE = re.compile(r"\bsmsfw_[A-Za-z0-9_:]*")
_GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_VECTOR_MATCH_RE = re.compile(r"\b(?:on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR_RE = re.compile(r"(smsfw_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_LEGEND_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _expressions(dashboard: dict) -> list[tuple[str, str, str]]:
    """(where, expr, legendFormat) of every PromQL query in the dashboard."""
    out = []
    for panel in _all_panels(dashboard):
        for t in panel.get("targets", []):
            out.append((panel["title"], t["expr"], t.get("legendFormat", "")))
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "query":
            q = var["query"]
            out.append((f"variable {var['name']}", q["query"] if isinstance(q, dict) else q, ""))
    assert out
    return out


def _split_labels(text: str) -> set[str]:
    return {s.strip() for s in text.split(",") if s.strip()}


def test_dashboard_expressions_are_balanced(dashboard):
    pairs = {")": "(", "]": "[", "}": "{"}
    for where, expr, _ in _expressions(dashboard):
        stack = []
        for ch in expr:
            if ch in "([{":
                stack.append(ch)
            elif ch in pairs:
                assert stack and stack.pop() == pairs[ch], f"{where}: unbalanced {expr}"
        assert not stack, f"{where}: unbalanced {expr}"


def test_dashboard_metric_names_exist_in_code(dashboard, code_metrics):
    unknown = []
    for where, expr, _ in _expressions(dashboard):
        for name in _METRIC_RE.findall(expr):
            if name not in code_metrics:
                unknown.append(f"{where}: {name}")
    assert not unknown, (
        "metrics used by the dashboard that the code does not export:\n" + "\n".join(unknown)
    )


def test_dashboard_label_names_exist_in_code(dashboard, code_metrics):
    problems = []
    for where, expr, legend in _expressions(dashboard):
        metrics = _METRIC_RE.findall(expr)
        available = set(TARGET_LABELS)
        for m in metrics:
            available |= code_metrics.get(m, set())
        for sel_metric, matchers in _SELECTOR_RE.findall(expr):
            for label in _MATCHER_RE.findall(matchers):
                if label not in code_metrics.get(sel_metric, set()) | TARGET_LABELS:
                    problems.append(f"{where}: {sel_metric} has no label {label!r}")
        grouped: set[str] = set()
        for group in _GROUPING_RE.findall(expr):
            labels = _split_labels(group)
            grouped |= labels
            for label in labels - available:
                problems.append(f"{where}: by/without ({label}) not a label of {metrics}")
        for group in _VECTOR_MATCH_RE.findall(expr):
            for label in _split_labels(group) - available:
                problems.append(f"{where}: on/ignoring/group_* ({label}) not a label of {metrics}")
        if expr.startswith("label_values("):
            label = expr[len("label_values(") :].rstrip(")").split(",")[-1].strip()
            if label not in available:
                problems.append(f"{where}: label_values on missing label {label!r}")
        # a legend can only show labels that survive the aggregation
        shown = grouped if grouped else available
        for label in _LEGEND_RE.findall(legend):
            if label not in shown:
                problems.append(f"{where}: legend {{{{{label}}}}} not in {sorted(shown)}")
    assert not problems, "\n".join(problems)


def test_dashboard_covers_the_operational_metrics(dashboard):
    used = set()
    for _, expr, _ in _expressions(dashboard):
        used |= set(_METRIC_RE.findall(expr))
    wanted = {
        "smsfw_messages_total",  # throughput by action, verdict mix by label
        "smsfw_submit_latency_seconds_bucket",
        "smsfw_message_latency_seconds_bucket",
        "smsfw_classification_latency_seconds_bucket",
        "smsfw_classifier_batch_size_bucket",
        "smsfw_classifier_queue_depth",
        "smsfw_upstream_sessions",
        "smsfw_receipts_total",
        "smsfw_outbox_pending",
        "smsfw_multipart_pending_messages",
        "smsfw_multipart_timeouts_total",
        "smsfw_client_bind_failures_total",
        "smsfw_pdus_total",
    }
    assert not wanted - used, sorted(wanted - used)
    exprs = " ".join(e for _, e, _ in _expressions(dashboard))
    assert "sum by (action) (rate(smsfw_messages_total" in exprs
    assert "sum by (label) (rate(smsfw_messages_total" in exprs
    for q in ("0.5", "0.9", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(smsfw_submit_latency_seconds_bucket"
            in exprs
        )


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile(cfg):
    ins = _dockerfile_instructions()
    kinds = [k for k, _ in ins]
    assert ins[0] == ("FROM", "python:3.11-slim")
    runs = [(i, a) for i, (k, a) in enumerate(ins) if k == "RUN"]
    torch_at = next(i for i, a in runs if "download.pytorch.org/whl/cpu" in a and "torch" in a)
    project_at = next(i for i, a in runs if re.search(r"pip install [\"']?\.\[fast\]", a))
    assert torch_at < project_at, "CPU torch must be installed before the project"
    copies = [a for k, a in ins if k == "COPY"]
    assert any(a.split()[0] == "." for a in copies), "the repository is not copied"
    user = dict(ins)["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert kinds.index("USER") > project_at
    exposed = {int(p.split("/")[0]) for k, a in ins if k == "EXPOSE" for p in a.split()}
    assert {cfg.server.port, cfg.metrics.port} <= exposed
    volumes = " ".join(a for k, a in ins if k == "VOLUME")
    assert "/var/lib/smsfw" in volumes
    health = dict(ins)["HEALTHCHECK"]
    assert f"http://127.0.0.1:{cfg.metrics.port}/healthz" in health
    assert "urllib" in health and "curl" not in health
    assert _exec_form(dict(ins)["ENTRYPOINT"]) == ["smpp-proxy"]
    cmd = _exec_form(dict(ins)["CMD"])
    assert cmd[:1] == ["run"] and _option(cmd, "--config") == "/app/config/proxy.docker.yaml"
    assert dict(ins)["WORKDIR"] == "/app"


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]  # a dir excludes its content
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        rx = _dockerignore_regex(pat.lstrip("!").strip("/"))
        if any(rx.match(c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "README.md",  # pyproject's readme: the build needs it
        "smpp_proxy/cli.py",
        "classifier/runner.py",
        "classifier/models/default/config.json",
        "classifier/models/default/model.safetensors",
        "config/proxy.docker.yaml",
    ]
    for rel in needed:
        assert not _dockerignored(rel, patterns), f".dockerignore excludes {rel}"
    for rel in (".git/HEAD", ".venv/bin/python", "smpp_proxy/__pycache__/x.pyc", "var/smsfw.db"):
        assert _dockerignored(rel, patterns), f".dockerignore lets {rel} into the image"
