"""Configuration: TOML parsed and validated once, every problem reported with file, line and key.

Each stage package owns the structs of its sections (``<pkg>/config.py``);
this module composes them. A section missing from the file takes the
built-in default; a ``[[rules]]`` list given replaces the default rule set.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from alerting.config import AlertingConfig
from alerting.config import validate as validate_alerting
from detection.config import DetectionConfig, RuleConfig
from detection.config import validate as validate_detection
from geodata.config import GeodataConfig
from geodata.config import validate as validate_geodata
from ingest.config import IngestConfig, KafkaConfig
from ingest.config import validate as validate_ingest
from stadtwacht.errors import StadtwachtError

__all__ = ["Config", "ConfigError", "HttpConfig", "LoggingConfig", "Problem", "load_config"]


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The one HTTP port: /metrics, /healthz, /readyz, /api, /cap, the control-room page."""

    host: str = "127.0.0.1"  # "0.0.0.0" in containers
    port: int = 9108
    #: Environment variable holding the API token for acknowledge/silence (never put the token here).
    api_token_env: str = "STADTWACHT_API_TOKEN"
    #: Or a file holding it (Kubernetes/Docker secrets); the environment variable wins.
    api_token_file: str = ""
    max_body_bytes: int = 65536


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR
    format: str = "text"  # "text" (human) | "json" (one JSON object per line)


class StateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Alert state, outbox, acks and silences (SQLite, WAL); overridden by --state-dir.
    dir: str = "stadtwacht-state"
    #: Where CAP 1.2 messages are written; empty = <state dir>/cap.
    cap_dir: str = ""


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    detection: DetectionConfig = msgspec.field(default_factory=DetectionConfig)
    rules: list[RuleConfig] = msgspec.field(default_factory=list)
    geodata: GeodataConfig = msgspec.field(default_factory=GeodataConfig)
    alerting: AlertingConfig = msgspec.field(default_factory=AlertingConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig, "ingest": IngestConfig, "detection": DetectionConfig, "geodata": GeodataConfig,
    "alerting": AlertingConfig, "http": HttpConfig, "logging": LoggingConfig, "state": StateConfig,
}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if where else f"{self.key}: {self.message}"


class ConfigError(StadtwachtError):
    """The configuration has problems; ``problems`` lists every one."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def default_rules_toml() -> str:
    return resources.files("detection").joinpath("default_rules.toml").read_text(encoding="utf-8")


def load_config(path: Path | str | None = None) -> tuple[Config, list[Problem]]:
    """Parse, convert and validate; returns the config (defaults where broken) and every problem."""
    default_rules = tomllib.loads(default_rules_toml())["rules"]
    if path is None:
        name, text, data = "<built-in Stuttgart defaults>", "", {}
    else:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            return Config(), [Problem(name, None, "-", f"cannot read: {e.strerror}")]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"line (\d+)", str(e))
            return Config(), [Problem(name, int(m.group(1)) if m else None, "-", f"TOML syntax: {e}")]
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(name, _locate(text, key), key, message))

    sections: dict[str, Any] = {}
    for key in data:
        if key not in _SECTIONS and key != "rules":
            problem(key, f"unknown section; known: {', '.join([*_SECTIONS, 'rules'])}")
    for key, struct in _SECTIONS.items():
        raw = data.get(key, {})
        try:
            sections[key] = msgspec.convert(raw, struct, str_keys=True)
        except msgspec.ValidationError as e:
            problem(*_split_validation(key, e))
            sections[key] = struct()
    rules: list[RuleConfig] = []
    raw_rules = data.get("rules", default_rules)
    if not isinstance(raw_rules, list):
        problem("rules", "must be an array of tables ([[rules]])")
        raw_rules = default_rules
    for i, raw in enumerate(raw_rules):
        try:
            rules.append(msgspec.convert(raw, RuleConfig, str_keys=True))
        except msgspec.ValidationError as e:
            problem(*_split_validation(f"rules[{i}]", e))
    if path is not None:  # file paths in the configuration are relative to the file
        base = Path(path).resolve().parent
        geo = sections["geodata"]
        sections["geodata"] = msgspec.structs.replace(
            geo, districts=_resolve(base, geo.districts), sensors=_resolve(base, geo.sensors))
    cfg = Config(rules=rules, **sections)
    for key, message in (
        validate_ingest(cfg.kafka, cfg.ingest)
        + validate_detection(cfg.detection, cfg.rules)
        + validate_geodata(cfg.geodata, None)
        + validate_alerting(cfg.alerting)
        + _validate_own(cfg)
    ):
        problem(key, message)
    return cfg, problems


def _resolve(base: Path, value: str) -> str:
    return str(base / value) if value and not Path(value).is_absolute() else value


def _validate_own(cfg: Config) -> list[tuple[str, str]]:
    out = []
    if cfg.logging.format not in ("text", "json"):
        out.append(("logging.format", "must be 'text' or 'json'"))
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        out.append(("logging.level", "must be DEBUG, INFO, WARNING or ERROR"))
    if not 0 <= cfg.http.port < 65536:
        out.append(("http.port", "must be 0..65535"))
    return out


_AT = re.compile(r" - at `\$(.*)`$")


def _split_validation(prefix: str, e: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "... - at `$.a[0].b`" into ("prefix.a[0].b", "...")."""
    text = str(e)
    m = _AT.search(text)
    sub = m.group(1) if m else ""
    message = text[: m.start()] if m else text
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        sub += "." + unknown.group(1)
        message = "unknown key (check the spelling; see the README for the keys)"
    return prefix + sub, message


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?")
_KEYLINE = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")


def _locate(text: str, key: str) -> int | None:
    """The line of a dotted key path like ``rules[2].levels`` in the TOML text (best effort)."""
    if not text:
        return None
    parts: list[str | int] = []
    for piece in key.split("."):
        m = re.match(r"^([^\[]+)((?:\[\d+\])*)$", piece)
        if not m:
            return None
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    table: list[str | int] = []
    counters: dict[str, int] = {}
    best: int | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        h = _HEADER.match(line)
        if h:
            names: list[str | int] = list(h.group(2).replace('"', "").split("."))
            if h.group(1) == "[[":
                dotted = ".".join(map(str, names))
                counters[dotted] = counters.get(dotted, -1) + 1
                names.append(counters[dotted])
            table = names
            if parts[: len(table)] == table and (best is None or len(table) >= 1):
                best = lineno
            continue
        k = _KEYLINE.match(line)
        if k and parts[: len(table)] == table:
            rest = parts[len(table):]
            if rest and rest[0] == k.group(1).replace('"', ""):
                return lineno
    return best
