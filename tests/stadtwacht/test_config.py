"""Configuration: defaults, section replacement, and every problem with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stadtwacht.cli import main
from stadtwacht.config import load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stadtwacht.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_builtin_defaults_are_valid():
    cfg, problems = load_config(None)
    assert problems == []
    names = [r.name for r in cfg.rules]
    assert "no2-1h" in names and "pm10-24h" in names
    assert cfg.kafka.topics == ["sensors.flood", "sensors.air"]
    assert cfg.kafka.community_topics == ["sensors.community"]


def test_missing_sections_take_defaults_and_rules_replace(tmp_path):
    cfg, problems = load_config(write(tmp_path, """
[kafka]
group_id = "other"

[[rules]]
name = "only"
quantity = "pm10"
levels = [10.0]
level_names = ["x"]
"""))
    assert problems == []
    assert cfg.kafka.group_id == "other" and cfg.kafka.topics == ["sensors.flood", "sensors.air"]
    assert [r.name for r in cfg.rules] == ["only"]


# (TOML text, expected (line, key) pairs, a word of the message)
CASES = [
    ("[kafka]\ngroup_id = 5\n", [(2, "kafka.group_id")], "Expected `str`"),
    ("[kafka]\ntopicz = []\n", [(2, "kafka.topicz")], "unknown key"),
    ("[nonsense]\na = 1\n", [(1, "nonsense")], "unknown section"),
    ("[kafka]\nauto_offset_reset = \"sometimes\"\n", [(2, "kafka.auto_offset_reset")], "earliest"),
    ("[ingest]\nmax_future = \"soon\"\n", [(2, "ingest.max_future")], "duration"),
    # kafka-python takes an unknown protocol as plaintext: TLS and SASL would be off without a word
    ("[kafka]\nsecurity_protocol = \"SASL_SLL\"\n", [(2, "kafka.security_protocol")], "SASL_SSL"),
    ("[kafka]\nsecurity_protocol = \"sasl_ssl\"\n", [(2, "kafka.security_protocol")], "exactly"),
    ("[kafka]\nsasl_mechanism = \"PLAIN\"\n", [(2, "kafka.sasl_mechanism")], "would be ignored"),
    ("[kafka]\ntopics = [\"bad topic!\"]\n", [(2, "kafka.topics")], "not a legal Kafka topic name"),
    ("[kafka]\nmax_block_ms = 0\n", [(2, "kafka.max_block_ms")], "between 1000 and 300000"),
    ("[kafka]\nbootstrap_servers = \"kafka:9092,kafka:notaport\"\n", [(2, "kafka.bootstrap_servers")],
     "not host:port: 'kafka:notaport'"),
    ("[logging]\nformat = \"xml\"\n", [(2, "logging.format")], "json"),
    ("[[rules]]\nname = \"a\"\nquantity = \"pm10\"\nlevels = [1.0]\nlevel_names = [\"x\"]\n"
     "[[rules]]\nname = \"b\"\nquantity = \"pm10\"\nlevels = \"high\"\n",
     [(9, "rules[1].levels")], "Expected `array`"),
]


@pytest.mark.parametrize(("text", "expected", "word"), CASES)
def test_problems_name_file_line_and_key(tmp_path, text, expected, word):
    path = write(tmp_path, text)
    _, problems = load_config(path)
    got = [(p.line, p.key) for p in problems]
    for item in expected:
        assert item in got, problems
    assert any(word in p.message for p in problems), problems
    assert all(p.file == str(path) for p in problems)


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    text = "[kafka]\ngroup_id = 5\n[logging]\nformat = \"xml\"\n[http]\nport = 99999\n"
    _, problems = load_config(write(tmp_path, text))
    assert {p.key for p in problems} >= {"kafka.group_id", "logging.format", "http.port"}


def test_toml_syntax_error_has_line(tmp_path):
    _, problems = load_config(write(tmp_path, "[kafka]\ngroup_id = \n"))
    assert problems and problems[0].line == 2


def test_check_config_cli(tmp_path, capsys):
    assert main(["check-config"]) == 0
    assert "configuration OK" in capsys.readouterr().out
    bad = write(tmp_path, "[kafka]\ngroup_id = 5\n")
    assert main(["check-config", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: kafka.group_id" in err


def test_check_config_counts_every_problem_line(tmp_path, capsys):
    registry = tmp_path / "sensors.csv"
    registry.write_text("sensor_id,name,kind,lat,lon\ns1,Eins,flood,48.7,9.1\n", encoding="utf-8")
    assert main(["check-config", "--sensors", str(registry)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"{len(lines) - 1} problem(s)" and len(lines) >= 3, lines
