"""Static checks of the Prometheus rules, their promtool unit tests and the Grafana dashboard's PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the deploy/ YAML files")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules" / "stadtwacht.rules.yml"
RULES_TEST = PROMETHEUS / "rules" / "stadtwacht.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stadtwacht.json"

#: Every metric name the service exposes (stadtwacht's own plus the default process and Python collectors).
COUNTERS = {
    "stadtwacht_readings_accepted_total",
    "stadtwacht_messages_consumed_total",
    "stadtwacht_dead_letter_messages_total",
    "stadtwacht_dead_letter_readings_total",
    "stadtwacht_detections_total",
    "stadtwacht_alert_events_total",
    "stadtwacht_notifications_total",
    "stadtwacht_rereads_total",
}
GAUGES = {
    "stadtwacht_consumer_lag",
    "stadtwacht_assigned_partitions",
    "stadtwacht_active_alerts",
    "stadtwacht_district_level",
    "stadtwacht_outbox_depth",
    "stadtwacht_channels_unusable",
    "stadtwacht_outbox_oldest_seconds",
    "stadtwacht_broker_up",
    "stadtwacht_last_reading_timestamp_seconds",
    "stadtwacht_warming_up",
    "stadtwacht_partial_view",
    "stadtwacht_build_info",
}
HISTOGRAMS = {"stadtwacht_batch_seconds", "stadtwacht_notification_latency_seconds"}
DEFAULT_COLLECTORS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
    "python_gc_collections_total",
    "python_info",
}
EXPOSED = (
    COUNTERS
    | GAUGES
    | DEFAULT_COLLECTORS
    | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
#: Series Prometheus adds itself to every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and variables removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of a dashboard."""
    out = []

    def walk(panels):
        for panel in panels:
            for t in panel.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel {panel['id']} {panel.get('title')!r} {t['refId']}", t["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return out


def grafana_to_promql(expr: str) -> str:
    """The expression with Grafana's variables replaced by values Prometheus accepts."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def _load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alert_rules() -> list[dict]:
    return [r for g in _load(RULES)["groups"] for r in g["rules"] if "alert" in r]


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not found: install Debian's 'prometheus' package (apt-get install -y prometheus)")
    return exe


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


# --- the name extractor itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up == 0", {"up"}),
        (
            'sum by (quantity) (rate(stadtwacht_readings_accepted_total{job=~"$job"}[$__rate_interval]))',
            {"stadtwacht_readings_accepted_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(stadtwacht_batch_seconds_bucket[5m]))) > 10",
            {"stadtwacht_batch_seconds_bucket"},
        ),
        ("a / on(x) group_left(y) b offset 5m", {"a", "b"}),
        (
            'time() - max(stadtwacht_last_reading_timestamp_seconds{hazard="sum(x)"})',
            {"stadtwacht_last_reading_timestamp_seconds"},
        ),
        ("sum(x) without (instance) and ignoring (le) y unless z", {"x", "y", "z"}),
        ("level:job:rate5m > 1e3", {"level:job:rate5m"}),
    ],
)
def test_metric_names_extracts_selected_series(expr, expected):
    assert metric_names(expr) == expected


# --- alert rules ------------------------------------------------------------------------------------------


def test_rules_file_has_the_required_alerts():
    names = {r["alert"] for r in _alert_rules()}
    required = {
        "StadtwachtConsumerLagGrowing",
        "StadtwachtNoReadings",
        "StadtwachtTopicSilent",
        "StadtwachtTopicUnread",
        "StadtwachtOutboxStuck",
        "StadtwachtNotificationsFailing",
        "StadtwachtBrokerDown",
        "StadtwachtInstanceDown",
    }
    assert required <= names


def test_rules_reference_only_exposed_metrics():
    for rule in _alert_rules():
        unknown = metric_names(rule["expr"]) - EXPOSED - SYNTHETIC
        assert not unknown, f"{rule['alert']}: unknown metrics {sorted(unknown)}"


def _finite_buckets() -> dict[str, list[float]]:
    """Histogram name -> its finite upper bounds, from the metrics a pipeline registers."""
    from alerting.metrics import AlertingMetrics
    from stadtwacht.metrics import PipelineMetrics, new_registry

    registry = new_registry()
    PipelineMetrics.create(registry)
    AlertingMetrics(registry)
    out: dict[str, list[float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                out.setdefault(sample.name.removesuffix("_bucket"), []).append(float(sample.labels["le"]))
    return out


def test_quantile_thresholds_lie_within_the_histograms_buckets():
    """histogram_quantile never answers above the largest finite bucket: a threshold there can never fire."""
    buckets = _finite_buckets()
    assert set(buckets) == HISTOGRAMS
    found = 0
    for rule in _alert_rules():
        for name, threshold in re.findall(r"histogram_quantile\(.*?(\w+)_bucket.*?\)+\s*>\s*([0-9.]+)",
                                          " ".join(rule["expr"].split())):
            found += 1
            assert float(threshold) < max(buckets[name]), (rule["alert"], name, threshold, buckets[name])
    assert found >= 2


def test_rules_have_severity_and_text():
    for rule in _alert_rules():
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description"} <= set(rule.get("annotations", {})), rule["alert"]


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    cases = [c for t in _load(RULES_TEST)["tests"] for c in t.get("alert_rule_test", [])]
    for rule in _alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{rule['alert']}: no case where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']}: no case where it stays silent"


def test_promtool_check_rules():
    res = _run(_promtool(), "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_test_rules():
    res = _run(_promtool(), "test", "rules", str(RULES_TEST))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path):
    """The unit tests compare values: a changed expectation must fail (guards against a vacuous suite)."""
    (tmp_path / RULES.name).write_text(RULES.read_text(encoding="utf-8"), encoding="utf-8")
    broken = RULES_TEST.read_text(encoding="utf-8").replace("(3000 messages)", "(6000 messages)")
    assert "(6000 messages)" in broken
    (tmp_path / RULES_TEST.name).write_text(broken, encoding="utf-8")
    res = _run(_promtool(), "test", "rules", str(tmp_path / RULES_TEST.name))
    assert res.returncode != 0


# --- Prometheus configuration ----------------------------------------------------------------------------


def test_prometheus_config_scrapes_stadtwacht_and_loads_the_rules():
    config = _load(PROMETHEUS / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert "stadtwacht" in jobs, 'the rules select job="stadtwacht"'
    sd = jobs["stadtwacht"]["dns_sd_configs"][0]
    assert sd["names"] == ["stadtwacht"] and sd["port"] == 9108
    matched = [p for pattern in config["rule_files"] for p in PROMETHEUS.glob(pattern)]
    assert matched == [RULES]


def test_promtool_check_config():
    res = _run(_promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 rule files found" in res.stdout


def test_kubernetes_scrape_example_keeps_the_stadtwacht_service_http_endpoints():
    # Debian's promtool is built without Kubernetes discovery, so this file is checked structurally only.
    config = _load(PROMETHEUS / "prometheus-k8s.example.yml")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "stadtwacht"
    assert job["kubernetes_sd_configs"] == [{"role": "endpoints"}]
    keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps == {"__meta_kubernetes_service_label_app_kubernetes_io_name": "stadtwacht",
                     "__meta_kubernetes_endpoint_port_name": "http"}
    service = yaml.safe_load((DEPLOY / "k8s" / "service.yaml").read_text(encoding="utf-8"))
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "stadtwacht"
    assert service["spec"]["ports"][0]["name"] == "http"


# --- Grafana dashboard ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_dashboard_queries_reference_only_exposed_metrics(dashboard):
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert not names - EXPOSED, f"{where}: unknown metrics {sorted(names - EXPOSED)}"
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            (metric,) = re.findall(r"label_values\((\w+)", var["definition"])
            assert metric in EXPOSED, var["name"]


def test_dashboard_covers_the_required_views(dashboard):
    used = set().union(*(metric_names(e) for _, e in dashboard_queries(dashboard)))
    for metric in (
        "stadtwacht_readings_accepted_total",
        "stadtwacht_dead_letter_readings_total",
        "stadtwacht_consumer_lag",
        "stadtwacht_batch_seconds_bucket",
        "stadtwacht_notification_latency_seconds_bucket",
        "stadtwacht_active_alerts",
        "stadtwacht_district_level",
        "stadtwacht_notifications_total",
    ):
        assert metric in used, metric


def test_dashboard_structure(dashboard):
    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p["id"])
            assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["id"]
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["id"]
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["id"]
                assert p["targets"], p["id"]
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"


def test_promtool_parses_every_dashboard_query(dashboard, tmp_path):
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_queries(dashboard))
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    res = _run(_promtool(), "check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(rules)} rules found" in res.stdout


def test_grafana_provisioning_matches_the_compose_mounts():
    datasources = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    (ds,) = datasources
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (provider,) = _load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "stadtwacht.yml")["providers"]
    grafana = _load(DEPLOY / "compose.yaml")["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
