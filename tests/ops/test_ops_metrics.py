"""A running ``stadtwacht run``: its /metrics, /readyz and logs, scraped by promtool and a real Prometheus.

One service process is shared by the module (it takes a few seconds to join the group): known readings
go in (2 gauges over their threshold, 10 pm10 readings, 4 bad messages), two webhook channels carry fake
secrets (one reachable, one on a closed port so it keeps retrying), and every test reads what came out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from stadtwacht.broker import free_port
from tests.ops.support import (
    API_TOKEN,
    WEBHOOK_PASSWORD,
    WEBHOOK_PATH_SECRET,
    WebhookReceiver,
    gauge_registry,
    iso,
    ops_config,
)
from tests.support.kafka_topics import create_topics, produce
from tests.support.service import ServiceProcess, parse_metrics, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules" / "stadtwacht.rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "stadtwacht.json"
SECRETS = (WEBHOOK_PASSWORD, WEBHOOK_PATH_SECRET, API_TOKEN)

# the known input and what it must produce
GAUGES = [("pegel-a", "mitte"), ("pegel-b", "nord")]
N_PM10 = 10
BAD = {"malformed": 2, "out_of_range": 1, "unknown_quantity": 1}


@dataclass
class Running:
    service: ServiceProcess
    hook: WebhookReceiver
    prefix: str
    log: Path


def _input(prefix: str) -> list[tuple[str, str, bytes]]:
    now = time.time()
    out = []
    for i, (g, _) in enumerate(GAUGES):  # 350 cm over the 300 cm level: one firing alert per district
        for k, v in enumerate((350.0, 360.0)):
            out.append((f"{prefix}.flood", g, json.dumps(
                {"sensor_id": g, "time": iso(now - 300 + 60 * k + i), "values": {"water_level": v}}).encode()))
    for i in range(N_PM10):
        out.append((f"{prefix}.air", f"air-{i}", json.dumps(
            {"sensor_id": f"air-{i}", "time": iso(now - 120 + i), "values": {"pm10": 5.0 + i},
             "lat": 48.77 + i * 1e-3, "lon": 9.18}).encode()))
    bad = [b'{"sensor_id": "x", "time": "2026', b"not json at all",
           json.dumps({"sensor_id": "air-x", "time": iso(now - 60), "values": {"pm10": -3.0},
                       "lat": 48.78, "lon": 9.18}).encode(),
           json.dumps({"sensor_id": "air-y", "time": iso(now - 60), "values": {"radon": 1.0},
                       "lat": 48.78, "lon": 9.18}).encode()]
    out += [(f"{prefix}.air", "bad", b) for b in bad]
    return out


@pytest.fixture(scope="module")
def running(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):
    import uuid

    tmp = tmp_path_factory.mktemp("ops-metrics")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    create_topics(kafka_bootstrap, [f"{prefix}.flood", f"{prefix}.air", f"{prefix}.community"])
    dead_port = free_port()  # nothing listens here: the second channel retries
    with WebhookReceiver() as hook:
        dead_url = f"json://watch:${{OPS_HOOK_PASSWORD}}@localhost:{dead_port}/hook/${{OPS_HOOK_TOKEN}}"
        # retries 30 s apart: the dead channel tries once, and the shutdown drain does not wait for it
        config = ops_config(tmp / "stadtwacht.toml", prefix, hook.config_url(), retry_initial="30s", extra=f"""
[[alerting.channels]]
name = "ops-dead"
url = "{dead_url}"
tags = ["control-room"]
""")
        registry = gauge_registry(tmp / "gauges.csv", GAUGES)
        log = tmp / "service.log"
        service = ServiceProcess(config, kafka_bootstrap, tmp / "state", "--sensors", str(registry),
                                 "--log-format", "json", "--log-level", "DEBUG",
                                 env=hook.secret_env(), log=log).start()
        try:
            service.wait_ready()
            produce(kafka_bootstrap, _input(prefix))
            want = len(GAUGES) * 2 + N_PM10
            wait_for(lambda: service.total("stadtwacht_readings_accepted_total") >= want
                     and service.total("stadtwacht_dead_letter_messages_total") >= sum(BAD.values())
                     and hook.count() >= 1
                     and service.total("stadtwacht_notifications_total", outcome="retry") >= 1,
                     60, "input processed and notifications attempted", service.check_alive)
            time.sleep(1.0)  # a scrape later nothing more may have arrived: the counts are exact
            yield Running(service, hook, prefix, log)
        finally:
            rc = service.stop()
        assert rc == 0, log.read_text()[-3000:]


def _metrics(running: Running) -> list[tuple[str, dict[str, str], float]]:
    status, body = running.service.get("/metrics", timeout=5)
    assert status == 200
    return parse_metrics(body.decode())


def _value(samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def _names(samples) -> set[str]:
    return {n for n, _, _ in samples}


# --- exposition ---------------------------------------------------------------------------------------------


def test_promtool_check_metrics_accepts_the_exposition(running):
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing: install Debian's 'prometheus' package (tests/setup-system.sh does)")
    _, body = running.service.get("/metrics", timeout=5)
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    # promtool exits 1 on lint problems and prints them; an empty report is the only pass
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_required_metric_families_have_the_expected_values(running):
    s = _metrics(running)
    prefix = running.prefix
    table = [
        # (name, labels, expected value)
        ("stadtwacht_readings_accepted_total", {"quantity": "water_level"}, 2 * len(GAUGES)),
        ("stadtwacht_readings_accepted_total", {"quantity": "pm10"}, N_PM10),
        *[("stadtwacht_dead_letter_messages_total", {"reason": r}, n) for r, n in BAD.items()],
        ("stadtwacht_messages_consumed_total", {"topic": f"{prefix}.air"}, N_PM10 + sum(BAD.values())),
        ("stadtwacht_messages_consumed_total", {"topic": f"{prefix}.flood"}, 2 * len(GAUGES)),
        ("stadtwacht_messages_consumed_total", {"topic": f"{prefix}.community"}, 0),
        ("stadtwacht_detections_total", {"hazard": "flood", "kind": "threshold", "level": "1"}, len(GAUGES)),
        ("stadtwacht_active_alerts", {"hazard": "flood", "level": "1"}, len(GAUGES)),
        ("stadtwacht_alert_events_total", {"event": "firing"}, len(GAUGES)),
        ("stadtwacht_notifications_total", {"channel": "json://127.0.0.1", "outcome": "success"},
         running.hook.count()),
        ("stadtwacht_broker_up", {}, 1),
        ("stadtwacht_warming_up", {}, 0),
        *[("stadtwacht_district_level", {"district": d, "hazard": "flood"}, 1) for _, d in GAUGES],
    ]
    for name, labels, expected in table:
        assert _value(s, name, **labels) == expected, (name, labels)
    # every readings topic has its series, at 0 though nothing came: a feed that never delivers is seen
    # (StadtwachtTopicSilent)
    assert {lab["topic"] for n, lab, _ in s if n == "stadtwacht_messages_consumed_total"} == {
        f"{prefix}.flood", f"{prefix}.air", f"{prefix}.community"}
    assert _value(s, "stadtwacht_build_info") == 1
    assert {lab["version"] for n, lab, _ in s if n == "stadtwacht_build_info"} != {""}
    # consumer lag: one series per assigned partition, all caught up
    lag = {(lab["topic"], lab["partition"]): v for n, lab, v in s if n == "stadtwacht_consumer_lag"}
    assert {t for t, _ in lag} == {f"{prefix}.flood", f"{prefix}.air", f"{prefix}.community"}
    assert set(lag.values()) == {0.0}
    # partitions read, per configured topic (the only replica reads them all)
    assigned = {lab["topic"]: v for n, lab, v in s if n == "stadtwacht_assigned_partitions"}
    assert assigned == {t: float(sum(1 for tt, _ in lag if tt == t)) for t, _ in lag}
    # histograms: batch processing time and reading-to-notification latency (the readings are minutes old)
    assert _value(s, "stadtwacht_batch_seconds_count") >= 1
    assert _value(s, "stadtwacht_batch_seconds_bucket", le="+Inf") == _value(s, "stadtwacht_batch_seconds_count")
    assert _value(s, "stadtwacht_notification_latency_seconds_count") == running.hook.count()
    assert _value(s, "stadtwacht_notification_latency_seconds_bucket", le="60.0") == 0
    assert _value(s, "stadtwacht_notification_latency_seconds_bucket", le="600.0") == running.hook.count()
    # the closed port keeps its deliveries in the outbox and retrying
    assert _value(s, "stadtwacht_notifications_total", channel="json://localhost", outcome="retry") >= 1
    assert _value(s, "stadtwacht_outbox_depth") >= 1
    assert 0 < _value(s, "stadtwacht_outbox_oldest_seconds") < 600
    # process and Python collectors
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "python_info", "python_gc_collections_total"):
        assert name in _names(s), name


def test_labels_have_bounded_cardinality_and_no_sensor_ids(running):
    s = _metrics(running)
    sensor_ids = {g for g, _ in GAUGES} | {f"air-{i}" for i in range(N_PM10)} | {"air-x", "air-y", "x"}
    allowed = {"quantity", "reason", "topic", "partition", "hazard", "kind", "level", "event", "channel",
               "outcome", "district", "le", "version", "generation", "implementation", "major", "minor", "cause",
               "patchlevel"}
    for name, labels, _ in s:
        assert set(labels) <= allowed, (name, labels)
        assert not sensor_ids & set(labels.values()), (name, labels)
    per_family: dict[str, int] = {}
    for name, _, _ in s:
        per_family[name] = per_family.get(name, 0) + 1
    assert max(per_family.values()) <= 30, per_family


def _promql_metric_names(text: str) -> set[str]:
    names = set(re.findall(r"\b((?:stadtwacht|process|python)_[a-z_]+)", text))
    return {n for n in names if not n.endswith("_")}


def test_every_metric_used_by_the_rules_and_the_dashboard_is_exported(running):
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = list(dashboard["panels"])
    for p in list(panels):
        panels += p.get("panels", [])
    exprs += [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
    exprs += [v["definition"] for v in dashboard.get("templating", {}).get("list", []) if v.get("definition")]
    used = set().union(*(_promql_metric_names(e) for e in exprs))
    assert "stadtwacht_outbox_oldest_seconds" in used
    exported = _names(_metrics(running))
    assert not used - exported, f"used by deploy/ but not exported by a running service: {sorted(used - exported)}"


# --- health and secrets ---------------------------------------------------------------------------------------


def test_readyz_reports_every_check_and_healthz_is_alive(running):
    status, body = running.service.get("/healthz")
    assert status == 200 and json.loads(body) == {"status": "alive"}
    status, body = running.service.get("/readyz")
    doc = json.loads(body)
    assert status == 200 and doc["ready"] is True, doc
    checks = doc["checks"]
    assert checks["broker"]["ok"] is True
    assert checks["partitions"]["ok"] is True and len(checks["partitions"]["assigned"]) == 9
    assert checks["state_store"]["ok"] is True
    outbox = checks["outbox"]
    assert outbox["ok"] is True and outbox["depth"] >= 1  # the dead channel's deliveries wait
    assert {c["channel"] for c in outbox["channels"].values()} == {"json://127.0.0.1", "json://localhost"}


def test_no_secret_in_metrics_readyz_state_or_logs(running):
    svc = running.service
    texts = {path: svc.get(path, timeout=5)[1].decode() for path in ("/metrics", "/readyz", "/api/state")}
    texts["log"] = running.log.read_text(encoding="utf-8")
    assert "retry" in texts["log"] or "failed" in texts["log"]  # the failing channel was logged about
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {where}"
    # the receiver got the credentials: the secrets were real, not dropped on the way
    post = running.hook.posts[0]
    assert post["path"] == f"/hook/{WEBHOOK_PATH_SECRET}" and post["auth"].startswith("Basic ")


def test_json_logs_are_one_object_per_line(running):
    lines = running.log.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 5
    for line in lines:
        doc = json.loads(line)  # a traceback or a print() on its own line would fail here
        assert isinstance(doc, dict) and {"time", "level", "logger", "message"} <= doc.keys(), line
        assert doc["level"] in ("debug", "info", "warning", "error", "critical")
    messages = [json.loads(line)["message"] for line in lines]
    assert any("partitions assigned" in m for m in messages)
    # the redaction of URLs must not hide where the service listens
    assert any(f"127.0.0.1:{running.service.port}" in m for m in messages), [m for m in messages if "HTTP" in m]


# --- a real Prometheus server ---------------------------------------------------------------------------------


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _scalar(base: str, promql: str) -> float | None:
    result = _query(base, promql)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.prometheus
def test_real_prometheus_scrapes_the_service_and_evaluates_the_rules(running, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus missing: install Debian's 'prometheus' package (tests/setup-system.sh does)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "stadtwacht",
                            "static_configs": [{"targets": [f"127.0.0.1:{running.service.port}"]}]}],
    }), encoding="utf-8")
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        def alive() -> None:
            assert proc.poll() is None, log.read_text()[-3000:]

        expected_readings = 2 * len(GAUGES) + N_PM10
        def scraped() -> bool:
            try:
                return _scalar(base, 'up{job="stadtwacht"}') == 1
            except OSError:  # still starting
                return False

        wait_for(scraped, 30, "the target scraped", alive)
        assert _scalar(base, "sum(stadtwacht_readings_accepted_total)") == expected_readings
        assert _scalar(base, 'sum(stadtwacht_readings_accepted_total{quantity="pm10"})') == N_PM10
        assert _scalar(base, 'stadtwacht_active_alerts{hazard="flood", level="1"}') == len(GAUGES)
        assert _scalar(base, "sum(stadtwacht_dead_letter_messages_total)") == sum(BAD.values())
        assert _scalar(base, 'sum(stadtwacht_notifications_total{outcome="success"})') == running.hook.count()
        assert _scalar(base, "stadtwacht_broker_up") == 1
        districts = {r["metric"]["district"] for r in _query(base, "stadtwacht_district_level > 0")}
        assert districts == {d for _, d in GAUGES}
        # the pipeline's own alert rules are loaded and evaluate against real series without errors
        def rules_evaluated():
            with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as r:
                groups = json.loads(r.read())["data"]["groups"]
            rules = [rule for g in groups for rule in g["rules"]]
            return rules if rules and all(rule.get("lastEvaluation", "").startswith("20") and
                                          not rule["lastEvaluation"].startswith("0001") for rule in rules) else None
        rules = wait_for(rules_evaluated, 15, "every rule evaluated", alive)
        assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
        for rule in rules:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        # a healthy pipeline: none of them is pending or firing (StadtwachtAbsent may be pending from an
        # evaluation before the first scrape; it must clear)
        wait_for(lambda: not _query(base, "ALERTS"), 15, "no pipeline alert pending or firing", alive)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
