"""Configuration decoding, validation and secret handling."""

from __future__ import annotations

import tomllib

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from alerting.config import AlertingConfig, ChannelConfig, validate
from alerting.errors import ChannelSecretError
from alerting.redaction import redact_url, resolve_channel_url
from alerting.service import AlertService

GOOD = """
group_wait = "30s"
repeat_interval = "2h"
language = "en"
[[group_rules]]
hazard = "flood"
min_level = 3
wait = "0s"
[[channels]]
name = "leitstelle"
url = "mailto://user:${SMTP_PASS}@smtp.example.org?to=ops@example.org"
tags = ["control-room"]
[[channels]]
name = "kats"
url_file = "/run/secrets/kats_url"
tags = ["kats"]
[[routes]]
hazard = "flood"
min_level = 3
tags = ["control-room", "kats"]
continue = true
escalate_after = "15m"
escalate_tags = ["kats"]
[[silences]]
id = "wartung-pegel-7"
sensors = ["pegel-7"]
starts = "2025-06-01T08:00:00+02:00"
ends = "2025-06-01T12:00:00+02:00"
max_level = 2
"""


def test_good_config_decodes_and_validates():
    cfg = msgspec.convert(tomllib.loads(GOOD), AlertingConfig)
    assert cfg.routes[0].continue_ is True
    assert validate(cfg) == []


def test_defaults_are_valid():
    cfg = AlertingConfig()
    assert validate(cfg) == []
    assert cfg.language == "de" and cfg.group_rules[0].wait == "0s"


def test_unknown_key_rejected():
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"channels": [{"name": "x", "url": "json://h", "tag": ["a"]}]}, AlertingConfig)


BAD = [
    ({"group_wait": "soon"}, "alerting.group_wait"),
    ({"language": "fr"}, "alerting.language"),
    ({"channels": [{"name": "a", "tags": ["t"]}]}, "alerting.channels[0].url"),
    ({"channels": [{"name": "a", "url": "json://h", "url_file": "/x", "tags": ["t"]}]}, "alerting.channels[0].url"),
    ({"channels": [{"name": "a", "url": "json://h"}]}, "alerting.channels[0].tags"),
    ({"channels": [{"name": "a", "url": "json://h", "tags": ["t"]}, {"name": "a", "url": "json://i", "tags": ["t"]}]},
     "alerting.channels[1].name"),
    ({"routes": [{"hazard": "fire", "tags": []}]}, "alerting.routes[0].hazard"),
    ({"channels": [{"name": "a", "url": "json://h", "tags": ["t"]}], "routes": [{"tags": ["nope"]}]},
     "alerting.routes[0].tags"),
    ({"channels": [{"name": "a", "url": "json://h", "tags": ["t"]}],
      "routes": [{"tags": ["t"], "min_level": 3, "max_level": 2}]}, "alerting.routes[0].max_level"),
    ({"channels": [{"name": "a", "url": "json://h", "tags": ["t"]}],
      "routes": [{"tags": ["t"], "escalate_after": "5m"}]}, "alerting.routes[0].escalate_tags"),
    ({"silences": [{"id": "s", "starts": "2025-06-01T08:00:00"}]}, "alerting.silences[0].starts"),
    ({"silences": [{"districts": ["mitte"]}]}, "alerting.silences[0].id"),
    ({"silences": [{"id": "s", "max_level": 0}]}, "alerting.silences[0].max_level"),
]


@pytest.mark.parametrize(("raw", "key"), BAD)
def test_bad_configs(raw, key):
    problems = validate(msgspec.convert(raw, AlertingConfig))
    assert key in [k for k, _ in problems], problems


def test_validation_never_echoes_a_url_secret():
    cfg = AlertingConfig(channels=[ChannelConfig(name="a", url="hunter2-no-scheme", tags=["t"])])
    problems = validate(cfg)
    assert problems and all("hunter2" not in m for _, m in problems)


REDACT = [
    ("mailto://user:pa55@smtp.example.org:587?to=a@b.org&from=c@d.org", "mailto://smtp.example.org"),
    ("mailtos://user:pa55@smtp.example.org", "mailtos://smtp.example.org"),
    ("json://user:secret@hooks.example.org:8080/path/token123?x=y", "json://hooks.example.org"),
    ("tgram://123456:ABCDEF-bot-token/987654", "tgram://"),
    ("ntfy://ntfy.sh/secret-topic", "ntfy://ntfy.sh"),
    ("json://127.0.0.1:9/hook", "json://127.0.0.1"),
    ("file:///var/lib/stadtwacht/alerts.jsonl", "file://"),
    ("no url at all", "invalid://"),
]


@pytest.mark.parametrize(("url", "expected"), REDACT)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_resolve_from_env_and_file(tmp_path):
    ch = ChannelConfig(name="a", url="mailto://u:${SMTP_PASS}@smtp.example.org", tags=["t"])
    assert resolve_channel_url(ch, {"SMTP_PASS": "s3cret"}) == "mailto://u:s3cret@smtp.example.org"
    with pytest.raises(ChannelSecretError) as ei:
        resolve_channel_url(ch, {})
    assert "SMTP_PASS" in str(ei.value) and "smtp.example.org" not in str(ei.value)
    f = tmp_path / "url"
    f.write_text("json://user:tok@hooks.example.org/x\n")
    assert resolve_channel_url(ChannelConfig(name="b", url_file=str(f), tags=["t"]), {}) == \
        "json://user:tok@hooks.example.org/x"
    with pytest.raises(ChannelSecretError):
        resolve_channel_url(ChannelConfig(name="c", url_file=str(tmp_path / "missing"), tags=["t"]), {})


def test_a_channel_whose_secret_is_missing_is_reported_at_start(tmp_path, caplog):
    """The service starts (the other channels keep warning) and says at once which channel cannot send."""
    cfg = AlertingConfig(channels=[
        ChannelConfig(name="mail", url="mailto://ops:${SMTP_PASS}@127.0.0.1:9?to=a@example.org", tags=["x"]),
        ChannelConfig(name="hook", url="json://127.0.0.1:9/${HOOK_PATH}", tags=["x"]),
    ])
    caplog.set_level("ERROR", logger="stadtwacht.alerting")
    reg = CollectorRegistry()
    svc = AlertService(cfg, tmp_path / "state", {"mitte": "Mitte"}, reg, environ={"HOOK_PATH": "h"})
    try:
        assert reg.get_sample_value("stadtwacht_channels_unusable") == 1
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert errors == ["channel 'mail': environment variable SMTP_PASS is not set: every notification routed "
                          "to it fails until that is fixed and the service restarted"]
    finally:
        svc.close()
    reg = CollectorRegistry()
    svc = AlertService(cfg, tmp_path / "state2", {"mitte": "Mitte"}, reg, environ={"HOOK_PATH": "h", "SMTP_PASS": "s"})
    try:
        assert reg.get_sample_value("stadtwacht_channels_unusable") == 0
    finally:
        svc.close()
