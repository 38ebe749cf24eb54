"""``stadtwacht demo``: embedded broker, scenario simulator, the full pipeline and the page, in one command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import threading
import time
from pathlib import Path

import msgspec
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from alerting.config import ChannelConfig
from stadtwacht.app import Service, api_token, install_signal_handlers
from stadtwacht.broker import EmbeddedBroker
from stadtwacht.config import Config
from stadtwacht.demo import DEMO_SENSORS_CSV, Simulator
from stadtwacht.demo.scenarios import DEFAULT_SPEED, OFFICIAL_DISTRICTS_RELATIVE, story_wall_seconds
from stadtwacht.demo.simulator import shared_dir

__all__ = ["create_topics", "demo_districts", "run_demo"]

log = logging.getLogger(__name__)

PARTITIONS = 3


def create_topics(bootstrap: str, topics: list[str], partitions: int = PARTITIONS) -> None:
    """Create the topics with several partitions (auto-creation would give one each)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stadtwacht-demo")
    try:
        for t in topics:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(t, partitions, 1)])
    finally:
        admin.close()


def demo_config(cfg: Config, state_dir: Path) -> Config:
    """The demo's additions: the local file and console channels."""
    channels = [*cfg.alerting.channels,
                ChannelConfig(name="console", url="console://", tags=["demo"]),
                ChannelConfig(name="file", url=f"file://{state_dir / 'notifications.jsonl'}", tags=["demo"])]
    return msgspec.structs.replace(cfg, alerting=msgspec.structs.replace(cfg.alerting, channels=channels))


def demo_districts(cfg: Config, given: str | None) -> tuple[str | None, str]:
    """The district layer the demo maps onto (None: the built-in one) and how the banner names it.

    ``--districts`` or ``[geodata] districts`` when set; otherwise the official Stadtbezirke in ``../shared``
    when it is there (real boundaries on the page and in CAP areas), else the approximate built-in layer.
    """
    if given or cfg.geodata.districts:
        path = given or cfg.geodata.districts
        return path, path
    shared = shared_dir()
    if shared is not None and (shared / OFFICIAL_DISTRICTS_RELATIVE).is_file():
        path = str(shared / OFFICIAL_DISTRICTS_RELATIVE)
        return path, f"official Stadtbezirke (Landeshauptstadt Stuttgart, dl-de/by-2.0), {path}"
    return None, "built-in APPROXIMATE layer (../shared/data/stuttgart/districts.geojson absent)"


def run_demo(cfg: Config, args: argparse.Namespace) -> int:
    speed = args.speed or DEFAULT_SPEED
    duration = args.duration if args.duration is not None else story_wall_seconds(speed) + 30
    # A fresh state directory each run (kept afterwards, so the notifications can be read).
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="stadtwacht-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(cfg, state_dir)
    if args.host:
        cfg = msgspec.structs.replace(cfg, http=msgspec.structs.replace(cfg.http, host=args.host))
    token = api_token(cfg, generate=True)
    districts, districts_named = demo_districts(cfg, args.districts)
    stop = threading.Event()
    install_signal_handlers(stop)
    with EmbeddedBroker(log_path=state_dir / "tansu.log") as broker:
        k = cfg.kafka
        create_topics(broker.bootstrap, [*k.topics, *k.community_topics])
        service = Service(cfg, broker.bootstrap, state_dir, port=args.port, districts=districts,
                          sensors=args.sensors or str(DEMO_SENSORS_CSV), notify=args.notify, exercise=True,
                          token=token)
        # A fresh install compiles the kernels on first use (about a minute on a small machine): done before the
        # story starts, so the simulator does not run ahead of a pipeline that cannot read yet.
        print("preparing the decode and detection kernels (compiled once after an install) ...", end=" ", flush=True)
        print(f"ready in {service.pipeline.compile_kernels():.1f} s", flush=True)
        url = service.http.public_url
        print(f"""
stadtwacht demo (EXERCISE) on an embedded Tansu broker at {broker.bootstrap}
  control-room page  {url}/          (API token: {token})
  metrics            {url}/metrics
  health             {url}/healthz  {url}/readyz
  CAP 1.2 feed       {url}/cap/atom.xml
  notifications      console, and {state_dir / 'notifications.jsonl'}
  districts          {districts_named}
  state              {state_dir}
The story (Neckar flood wave, winter inversion, ozone afternoon, a stuck and a silent sensor) runs
{story_wall_seconds(speed):.0f} s at {speed:.0f}x; the demo stops after {duration:.0f} s or on Ctrl-C.
""", flush=True)
        failure: list[BaseException] = []

        def run_pipeline() -> None:
            try:
                service.run(stop)
            except BaseException as e:  # reported below: the demo must not exit 0 on a dead pipeline
                failure.append(e)
                log.exception("the pipeline stopped with an error")

        pipeline_thread = threading.Thread(target=run_pipeline, name="pipeline")
        pipeline_thread.start()
        simulator = Simulator(broker.bootstrap, speed=speed)
        sim_thread = threading.Thread(target=simulator.run, args=(None, stop), name="simulator", daemon=True)
        sim_thread.start()
        deadline = time.monotonic() + duration
        try:
            while not stop.is_set() and time.monotonic() < deadline and pipeline_thread.is_alive():
                stop.wait(0.5)
        finally:
            stop.set()
            sim_thread.join(timeout=10)
            pipeline_thread.join(timeout=60)
    if failure:
        print(f"demo failed: the pipeline stopped with {type(failure[0]).__name__}: {failure[0]}", flush=True)
        return 1
    active = service.pipeline.alerts.active()
    print(f"demo finished: {len(service.pipeline.alerts.history(10_000))} alert events, {len(active)} still "
          f"active; notifications in {state_dir / 'notifications.jsonl'}")
    return 0
