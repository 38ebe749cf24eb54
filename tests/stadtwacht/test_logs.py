"""Log redaction: no secret reaches a log line, and what ops need to find a broker or a channel stays."""

from __future__ import annotations

import logging

import pytest

from stadtwacht.logs import _OncePerTopic, _Redacting, redact_text


@pytest.mark.parametrize(("text", "expected"), [
    ("Could not load E-Mail URL: mailto://ops:p...Z@smtp.example.org:9?to=a@example.org&mode=insecure",
     "Could not load E-Mail URL: mailto://smtp.example.org:9"),
    ("a json://u:tok@h.example.org/x b", "a json://h.example.org b"),
    # librdkafka names brokers by listener: the port says which one; a compose service name has no dot
    ("ssl://kafka-1:9093/1: Connect to ipv4#10.0.0.3:9093 failed",
     "ssl://kafka-1:9093 Connect to ipv4#10.0.0.3:9093 failed"),
    ("bootstrap tcp://127.0.0.1:9092 down", "bootstrap tcp://127.0.0.1:9092 down"),
    ("tcp://[::1]:9092", "tcp://[::1]:9092"),
    ("http://u:p@kafka:8080/x?token=1", "http://kafka:8080"),
    # tokens where a host would be: nothing of them, port or not
    ("tgram://123456:ABCDEF-bot-token/987654", "tgram://"),
    ("pover://usertoken:4242@apptoken", "pover://"),
    ("mailto://u:p@smtp.example.org:99999", "mailto://smtp.example.org"),  # port out of range: the host stays
    ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected


def test_the_log_filter_rewrites_records_of_any_logger():
    rec = logging.LogRecord("apprise", logging.ERROR, __file__, 1, "Could not load E-Mail URL: %s", (
        "mailto://ops:secret@smtp.example.org?to=a@example.org",), None)
    assert _Redacting().filter(rec)
    assert rec.getMessage() == "Could not load E-Mail URL: mailto://smtp.example.org"


def test_kafka_pythons_missing_topic_line_passes_once_per_topic_and_interval(monkeypatch):
    """kafka-python logs it at ERROR with every metadata refresh (ten a second) while a topic it sends to is missing."""
    now = [1000.0]
    monkeypatch.setattr("stadtwacht.logs.time.monotonic", lambda: now[0])
    once = _OncePerTopic(every_s=300.0)

    def passes(topic: str, msg: str = "Topic %s not found in cluster metadata") -> bool:
        return once.filter(logging.LogRecord("kafka.cluster", logging.ERROR, __file__, 1, msg, (topic,), None))

    assert passes("a.dlq") and passes("b.dlq")
    now[0] += 0.1
    assert not passes("a.dlq") and not passes("b.dlq")
    assert passes("a.dlq", "Topic %s is not authorized for this client")  # other lines untouched
    now[0] += 300.0
    assert passes("a.dlq") and not passes("a.dlq")
