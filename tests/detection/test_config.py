"""Detection configuration: TOML decoding, the shipped default rules, and validate() key paths."""

from __future__ import annotations

import tomllib

import msgspec
import pytest

from detection.config import DetectionConfig, HealthConfig, RuleConfig, load_default_rules, validate


def _rule(**kw) -> RuleConfig:
    base = dict(name="r", quantity="no2", levels=[200.0], level_names=["x"])
    return RuleConfig(**{**base, **kw})


def test_default_rules_are_valid_and_follow_39_bimschv():
    rules = load_default_rules()
    assert validate(DetectionConfig(), rules) == []
    by = {r.name: r for r in rules}
    assert by["no2-1h"].levels == [200.0, 400.0] and by["no2-1h"].for_ns()[1] == 3 * 3600 * 10**9
    assert by["o3-1h"].levels == [180.0, 240.0]
    assert by["so2-1h"].levels == [500.0] and by["so2-1h"].for_ns() == [3 * 3600 * 10**9]
    assert by["pm10-24h"].window == "24h" and by["pm10-24h"].levels == [50.0]
    flood = by["neckar-pegel-beispiel"]
    assert flood.sensors == ["pegel-*"] and flood.hazard_name() == "flood"
    assert flood.clear[-1] == 450.0 and flood.levels[-1] == 500.0


def test_toml_keys_including_for():
    text = """
[[rules]]
name = "a"
quantity = "o3"
levels = [180, 240]
for = ["0s", "1h"]
keep_firing_for = "10m"
level_names = ["Info", "Alarm"]
"""
    rule = msgspec.convert(tomllib.loads(text)["rules"][0], RuleConfig)
    assert rule.for_ == ["0s", "1h"] and rule.keep_firing_for == "10m"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "a", "quantity": "o3", "levels": [1], "treshold": 2}, RuleConfig)


@pytest.mark.parametrize(("rules", "path"), [
    ([_rule(), _rule()], "rules[1].name"),
    ([_rule(quantity="radon")], "rules[0].quantity"),
    ([_rule(window="5 parsecs")], "rules[0].window"),
    ([_rule(window="30s")], "rules[0].window"),
    ([_rule(aggregate="median")], "rules[0].aggregate"),
    ([_rule(aggregate="rate_per_hour")], "rules[0].window"),
    ([_rule(levels=[])], "rules[0].levels"),
    ([_rule(levels=[2.0, 1.0], level_names=["a", "b"])], "rules[0].levels"),
    ([_rule(levels=[1.0, 2.0], level_names=["a", "b"], clear=[1.0, 2.5])], "rules[0].clear"),
    ([_rule(clear=[1.0, 2.0])], "rules[0].clear"),
    ([_rule(levels=[1.0, 2.0], level_names=["a", "b"], for_=["1h"])], "rules[0].for"),
    ([_rule(for_=["1x"])], "rules[0].for[0]"),
    ([_rule(keep_firing_for="soon")], "rules[0].keep_firing_for"),
    ([_rule(level_names=[])], "rules[0].level_names"),
    ([_rule(hazard="sensor")], "rules[0].hazard"),
    ([_rule(sensors=[])], "rules[0].sensors"),
])
def test_validate_reports_key_paths(rules, path):
    assert path in [p for p, _ in validate(DetectionConfig(), rules)]


@pytest.mark.parametrize(("config", "path"), [
    (DetectionConfig(late_tolerance="x"), "detection.late_tolerance"),
    (DetectionConfig(value_refresh="-5m"), "detection.value_refresh"),
    (DetectionConfig(health=HealthConfig(stale_factor=0)), "detection.health.stale_factor"),
    (DetectionConfig(health=HealthConfig(stuck_for="0s")), "detection.health.stuck_for"),
    (DetectionConfig(health=HealthConfig(stuck_min_readings=0)), "detection.health.stuck_min_readings"),
    (DetectionConfig(health=HealthConfig(saturation={"pm1": 1.0})), "detection.health.saturation.pm1"),
])
def test_validate_detection_section(config, path):
    assert path in [p for p, _ in validate(config, [])]
