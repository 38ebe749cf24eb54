"""The ``stadtwacht`` command: run, demo, replay, simulate, check-config, anomaly-score, silence."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

import msgspec

from ingest.config import bootstrap_problem, environment_problems
from ingest.config import validate as validate_ingest
from stadtwacht import __version__
from stadtwacht.config import Config, ConfigError, Problem, load_config
from stadtwacht.errors import StadtwachtError
from stadtwacht.logs import setup_logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

__all__ = ["main"]

log = logging.getLogger("stadtwacht")


def _common(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    p.add_argument("--config", type=Path, required=config_required,
                   help="TOML configuration (default: the shipped Stuttgart configuration)")
    p.add_argument("--districts", help="district layer (GeoJSON, GeoPackage or Shapefile); "
                                       "default: [geodata] districts or the built-in approximate layer")
    p.add_argument("--sensors", help="sensor registry CSV; default: [geodata] sensors or the shipped registry")
    p.add_argument("--notify", action="append", default=[], metavar="APPRISE_URL",
                   help="extra notification channel (repeatable); receives every alert event")
    p.add_argument("--log-format", choices=["text", "json"], help="override [logging] format")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="override [logging] level")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stadtwacht", description=(
        "Civil-protection alerting: sensor readings from Kafka to district alerts. "
        "See README.md for the reading contract and configuration."))
    parser.add_argument("--version", action="version", version=f"stadtwacht {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="consume readings from Kafka and alert (the service)")
    _common(p)
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (overrides [kafka])")
    p.add_argument("--state-dir", type=Path, help="alert state, outbox and CAP files (overrides [state] dir)")
    p.add_argument("--metrics-port", type=int, help="HTTP port for /metrics, health, API and page "
                                                    "(default [http] port, 9108)")
    p.add_argument("--topic", action="append", default=[], help="input topic (repeatable; replaces the "
                                                                "configured reading-contract topics)")

    p = sub.add_parser("demo", help="the whole system on an embedded broker with Stuttgart scenarios")
    _common(p)
    p.add_argument("--duration", type=float, help="seconds until the demo stops (default: the story length)")
    p.add_argument("--speed", type=float, default=None, help="simulated seconds per wall second")
    p.add_argument("--port", type=int, default=9108, help="HTTP port for the page, metrics and API")
    p.add_argument("--host", help="HTTP address to listen on (default [http] host, 127.0.0.1; 0.0.0.0 in a "
                                  "container whose port is published)")
    p.add_argument("--state-dir", type=Path, help="default: a fresh temporary directory")

    p = sub.add_parser("replay", help="run recorded readings (JSON Lines or sensor.community CSV) without Kafka")
    _common(p)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("--alerts-out", type=Path, help="write alert records as JSON Lines ('-' = stdout)")
    p.add_argument("--dead-letters-out", type=Path, help="write rejected input with reasons as JSON Lines")
    p.add_argument("--state-dir", type=Path, help="default: a fresh temporary directory")
    p.add_argument("--cap-dir", type=Path, help="also write CAP 1.2 messages here")

    p = sub.add_parser("simulate", help="publish the demo scenarios to a Kafka cluster")
    p.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    p.add_argument("--speed", type=float, default=None)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")
    p.add_argument("--log-format", choices=["text", "json"], default="text")

    p = sub.add_parser("check-config", help="validate configuration, district layer and sensor registry")
    _common(p)

    p = sub.add_parser("anomaly-score", help="score a timestamp,value CSV (NAB format) with the online detector")
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, help="output CSV (default: see the detector's docs)")
    p.add_argument("--config", type=Path, help="take [detection.anomaly] from this configuration")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="WARNING")
    p.add_argument("--log-format", choices=["text", "json"], default="text")

    p = sub.add_parser("silence", help="list, add or remove silences in a state directory (with [kafka] "
                                        "district_topic also shared with every instance)")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--config", type=Path)
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (overrides [kafka]); with "
                                                            "[kafka] district_topic, add and remove are shared")
    p.add_argument("action", choices=["list", "add", "remove"])
    p.add_argument("--district", action="append", default=[], help="district id (repeatable)")
    p.add_argument("--sensor", action="append", default=[], help="sensor id (repeatable)")
    p.add_argument("--duration", default="2h", help='e.g. "2h"; "forever" = until removed')
    p.add_argument("--max-level", type=int, metavar="N", help="the highest level it covers: a change to a level "
                                                               "above is sent all the same (default: every level)")
    p.add_argument("--comment", default="")
    p.add_argument("--operator", default="cli")
    p.add_argument("--id", help="silence id (remove)")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="WARNING")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    return parser


def _load(args: argparse.Namespace) -> Config:
    cfg, problems = load_config(getattr(args, "config", None))
    if problems:
        raise ConfigError(problems)
    return cfg


def _setup_logs(args: argparse.Namespace, cfg: Config | None) -> None:
    level = getattr(args, "log_level", None) or (cfg.logging.level if cfg else "INFO")
    fmt = getattr(args, "log_format", None) or (cfg.logging.format if cfg else "text")
    setup_logging(level, fmt)


def _district_layer(cfg: Config, path: str | None):
    """The layer at ``path`` read with the configured columns, or the built-in one."""
    from geodata.districts import DistrictLayer

    geo = cfg.geodata
    if not path:
        return DistrictLayer.demo()
    return DistrictLayer.from_file(path, geo.id_column, geo.name_column, geo.metric_crs, geo.number_column)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg, problems = load_config(args.config)
    messages = [str(p) for p in problems]
    if not problems:
        from alerting.errors import ChannelSecretError
        from alerting.redaction import resolve_channel_url
        from geodata.registry import SensorRegistry

        messages += [f"{key}: {message}" for key, message in environment_problems(cfg.kafka, os.environ)]
        for channel in cfg.alerting.channels:  # the secrets the service would resolve at start, from here
            try:
                resolve_channel_url(channel, os.environ)
            except ChannelSecretError as e:
                messages.append(str(e))
        geo = cfg.geodata
        try:
            path = args.districts or geo.districts
            layer = _district_layer(cfg, path)
            messages += [f"district layer: {m}" for m in layer.check(geo.overlap_tolerance_m2,
                                                                      geo.gap_tolerance_m2)]
            sensors_path = args.sensors or geo.sensors
            registry = SensorRegistry.from_csv(sensors_path) if sensors_path else SensorRegistry.shipped()
            messages += [f"sensor registry line {line}: {m}" for line, m in registry.check_districts(layer.ids)]
        except Exception as e:  # report, don't crash: this command exists to find problems
            messages.append(str(e) if isinstance(e, StadtwachtError) else f"{type(e).__name__}: {e}")
    if messages:
        for m in messages:
            print(m, file=sys.stderr)
        count = sum(m.count("\n") + 1 for m in messages)  # an error may list several lines of a file
        print(f"{count} problem(s)", file=sys.stderr)
        return 1
    print(f"configuration OK: {len(cfg.rules)} rules, {len(cfg.alerting.channels)} channels")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from stadtwacht.app import Service, api_token, install_signal_handlers

    cfg = _load(args)
    _setup_logs(args, cfg)
    bootstrap = args.bootstrap or cfg.kafka.bootstrap_servers
    if not bootstrap:
        print("no Kafka bootstrap servers: set [kafka] bootstrap_servers or --bootstrap "
              "(or try `stadtwacht demo`, which starts an embedded broker)", file=sys.stderr)
        return 2
    if args.topic:
        cfg = msgspec.structs.replace(cfg, kafka=msgspec.structs.replace(cfg.kafka, topics=args.topic))
        problems = validate_ingest(cfg.kafka, cfg.ingest)
        if problems:  # the topics given on the command line, checked as the file's are
            raise ConfigError([Problem("--topic", None, key, message) for key, message in problems])
    if why := bootstrap_problem(bootstrap):
        raise ConfigError([Problem("--bootstrap" if args.bootstrap else str(args.config), None,
                                   "kafka.bootstrap_servers", why)])
    problems = environment_problems(cfg.kafka, os.environ)
    if problems:  # permanent: retrying the connection would not mend them
        raise ConfigError([Problem("environment", None, key, message) for key, message in problems])
    state_dir = args.state_dir or Path(cfg.state.dir)
    token = api_token(cfg)
    if token is None:
        log.warning("no API token (env %s): acknowledge and silence API will answer 401",
                    cfg.http.api_token_env)
    stop = threading.Event()
    install_signal_handlers(stop)
    service = Service(cfg, bootstrap, state_dir, port=args.metrics_port, districts=args.districts,
                      sensors=args.sensors, notify=args.notify, token=token)
    service.run(stop)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stadtwacht.demo.run import run_demo

    cfg = _load(args)
    _setup_logs(args, cfg)
    return run_demo(cfg, args)


def cmd_replay(args: argparse.Namespace) -> int:
    from stadtwacht.metrics import new_registry
    from stadtwacht.outputs import AlertOutputs
    from stadtwacht.pipeline import Pipeline
    from stadtwacht.replay import ReplayClock, drain_notifications, last_delivery_id, replay_files, undelivered

    cfg = _load(args)
    _setup_logs(args, cfg)
    for p in args.inputs:
        if not p.exists():
            print(f"{p}: no such file", file=sys.stderr)
            return 2
    # Historical data: only channels named with --notify receive it, never the configured ones.
    cfg = msgspec.structs.replace(cfg, alerting=msgspec.structs.replace(cfg.alerting, channels=[]))
    with tempfile.TemporaryDirectory(prefix="stadtwacht-replay-") as tmp:
        state_dir = args.state_dir or Path(tmp)
        holder: list[Pipeline] = []
        clock = ReplayClock(lambda: holder[0].now_ns())  # the archive's time, moved on only to retry after it
        pipeline = Pipeline(cfg, new_registry(), state_dir, districts_path=args.districts,
                            sensors_path=args.sensors, extra_channels=args.notify, alert_clock_ns=clock)
        holder.append(pipeline)
        out = None
        try:
            if args.alerts_out is not None:
                out = sys.stdout.buffer if str(args.alerts_out) == "-" else open(args.alerts_out, "wb")  # noqa: SIM115
            dead = open(args.dead_letters_out, "wb") if args.dead_letters_out else None  # noqa: SIM115
            outputs = AlertOutputs(pipeline, jsonl=out, cap_dir=args.cap_dir)
            if args.notify:
                queued_before = last_delivery_id(pipeline)
                pipeline.alerts.start()
            summary = replay_files(pipeline, args.inputs, outputs, dead)
            if out is sys.stdout.buffer:  # a write error now, not at interpreter exit after "done"
                try:
                    out.flush()
                except OSError as e:
                    raise OSError(e.errno, e.strerror, "standard output") from e
            problems = summary.problems(args.dead_letters_out)
            if args.notify:
                drain_notifications(pipeline, clock)
                if missed := undelivered(pipeline, queued_before):
                    problems.append(missed)
            if dead:
                dead.close()
        finally:
            if out is not None and out is not sys.stdout.buffer:
                out.close()
            pipeline.alerts.close()
    print(f"replay: {summary}", file=sys.stderr)
    if problems:  # ran, but not what was asked: a script must not take it for done
        print(f"stadtwacht replay: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from stadtwacht.app import install_signal_handlers
    from stadtwacht.demo.simulator import Simulator

    _setup_logs(args, None)
    stop = threading.Event()
    install_signal_handlers(stop)
    kw = {} if args.speed is None else {"speed": args.speed}
    Simulator(args.bootstrap, **kw).run(args.duration, stop)
    return 0


def cmd_anomaly_score(args: argparse.Namespace) -> int:
    from detection.anomaly_score import SeriesError, write_scores

    setup_logging(args.log_level, args.log_format)
    config = None
    if args.config:
        cfg, problems = load_config(args.config)
        if problems:
            raise ConfigError(problems)
        config = cfg.detection.anomaly
    try:
        scored = write_scores(args.input, args.output, config)
    except SeriesError as e:  # read, but nothing to score: no output written
        print(f"stadtwacht anomaly-score: {e}", file=sys.stderr)
        return 1
    print(scored.path, file=sys.stderr)
    if scored.rejected:
        print(f"anomaly-score: {scored.rejected} of {scored.rows} rows rejected, not scored and left out of the "
              f"output (first: {scored.first_rejected})", file=sys.stderr)
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    from alerting.cli import silence_command

    cfg, problems = load_config(args.config)
    if problems:
        raise ConfigError(problems)
    setup_logging(args.log_level, args.log_format)
    if args.action == "add" and args.district:  # an id the layer does not have silences nothing
        layer = _district_layer(cfg, cfg.geodata.districts)
        unknown = sorted(set(args.district) - set(layer.ids))
        if unknown:
            print(f"silence add: unknown district(s): {', '.join(unknown)} (ids: {', '.join(layer.ids)})",
                  file=sys.stderr)
            return 2
    if args.action == "list" or not cfg.kafka.district_topic:
        return silence_command(cfg.alerting, args)
    # several instances: the change also goes to the others, as one made through any instance's API
    from ingest.kafka_io import make_producer
    from stadtwacht.city_view import send_silence

    bootstrap = args.bootstrap or cfg.kafka.bootstrap_servers
    if not bootstrap:
        raise ConfigError([Problem(str(args.config), None, "kafka.bootstrap_servers", "needed (or --bootstrap): "
                                   "with kafka.district_topic a silence is shared with every instance")])

    def share(silence_id, silence) -> None:
        producer = make_producer(cfg.kafka, bootstrap)
        try:
            send_silence(producer, cfg.kafka.district_topic, silence_id, silence)
        finally:
            producer.close()

    return silence_command(cfg.alerting, args, share)


_COMMANDS = {
    "run": cmd_run, "demo": cmd_demo, "replay": cmd_replay, "simulate": cmd_simulate,
    "check-config": cmd_check_config, "anomaly-score": cmd_anomaly_score, "silence": cmd_silence,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except StadtwachtError as e:  # a layer, registry or state store that cannot be used: say which, no traceback
        print(f"stadtwacht {args.command}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a port in use, a file missing or not writable
        print(f"stadtwacht {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
