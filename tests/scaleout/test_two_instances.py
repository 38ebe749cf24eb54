"""Scale-out: two ``stadtwacht run`` instances in one group, a district whose sensors sit on different partitions.

The quorum needs all three sensors of the district (min_sensors = 3, nobody trusted), and the sensors'
readings are on three partitions split over two instances: only the district topic brings them together.
The district must fire once and clear once, with one notification each on the (shared) webhook.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgspec
import pytest
from kafka import KafkaProducer

from alerting.cap import cap_identifier
from stadtwacht.district_stage import district_partition
from tests.support.kafka_topics import create_topics, read_topic
from tests.support.receivers import HttpReceiver
from tests.support.service import REPO, ServiceProcess, parse_metrics, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DISTRICT = "mitte"
SENSORS = ["pegel-s0", "pegel-s2", "pegel-s3"]  # murmur2 puts them on partitions 0, 1, 2 (sent explicitly too)


class Receiver(HttpReceiver):
    """The shared json:// webhook receiver, reading the Ref lines of every POST."""

    def refs(self) -> list[str]:
        return [line.strip() for p in self.posts for line in str(p.get("message", "")).splitlines()
                if line.strip().startswith("Ref:")]


def _config(tmp_path, prefix: str, hook_port: int, client: str = "kafka-python") -> tuple:
    registry = tmp_path / "sensors.csv"
    registry.write_text("sensor_id,name,hazard,lat,lon,impact,trusted\n" + "".join(
        f"{s},Pegel {s},flood,48.78,9.18,{DISTRICT},false\n" for s in SENSORS), encoding="utf-8")
    config = tmp_path / "stadtwacht.toml"
    config.write_text(f"""
[kafka]
client = "{client}"
group_id = "{prefix}-group"
topics = ["{prefix}.flood"]
community_topics = []
alerts_topic = "{prefix}.alerts"
district_topic = "{prefix}.districts"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_records = 500

[geodata]
sensors = "{registry}"

[geodata.quorum]
min_sensors = 3
min_fraction = 1.0
trusted_count_alone = false

[alerting]
group_wait = "0s"
retry_initial = "1s"
retry_max = "2s"

[[alerting.channels]]
name = "hook"
url = "json://127.0.0.1:{hook_port}/hook"
tags = ["ops"]

[[alerting.routes]]
hazard = "flood"
min_level = 1
tags = ["ops"]

[[rules]]
name = "pegel-test"
quantity = "water_level"
sensors = ["pegel-*"]
window = "0s"
aggregate = "last"
levels = [400.0]
level_names = ["Warnung"]
""", encoding="utf-8")
    return config


def _reading(sensor: str, t_ns: int, value: float) -> bytes:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ns // 1_000_000_000))
    return json.dumps({"sensor_id": sensor, "time": f"{t}Z", "values": {"water_level": value}}).encode()


def _assigned(proc: ServiceProcess) -> set[str]:
    status, body = proc.get("/readyz")
    return set(json.loads(body)["checks"]["partitions"]["assigned"]) if status == 200 else set()


def _wait_split(procs: list[ServiceProcess], topics: list[str], timeout: float = 60.0) -> list[set[str]]:
    """Until the group settled: every partition of the topics owned by exactly one instance, both busy."""
    want = {f"{t}/{p}" for t in topics for p in range(3)}
    deadline = time.monotonic() + timeout
    stable_since, last = None, None
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        got = [_assigned(p) for p in procs]
        ok = all(got) and set().union(*got) == want and sum(len(g) for g in got) == len(want)
        if ok and got == last:
            if stable_since is not None and time.monotonic() - stable_since > 3.0:
                return got
            stable_since = stable_since or time.monotonic()
        else:
            stable_since = None
        last = got
        time.sleep(0.3)
    raise AssertionError(f"group did not settle: {last}")


def _alerts(bootstrap: str, topic: str) -> list[dict]:
    return [json.loads(r.value) for r in read_topic(bootstrap, topic, timeout=10)]


def _cap(proc: ServiceProcess, alert_id: str) -> str | None:
    """The latest CAP message of an alert an instance serves (None: none yet)."""
    status, body = proc.get(f"/cap/{alert_id}.xml")
    return body.decode() if status == 200 else None


def _wait_for(predicate, timeout: float, procs: list[ServiceProcess], what: str):
    def alive() -> None:
        for p in procs:
            p.check_alive()

    return wait_until(predicate, timeout, interval=0.5, what=what, alive=alive)


class _Scene:
    """Topics, a shared webhook receiver and two ``run`` instances in one group, the group settled."""

    def __init__(self, bootstrap: str, prefix: str, tmp_path, client: str = "kafka-python", env=None) -> None:
        self.bootstrap = bootstrap
        self.flood, self.alerts, self.districts = f"{prefix}.flood", f"{prefix}.alerts", f"{prefix}.districts"
        create_topics(bootstrap, [self.flood, self.alerts, self.districts], partitions=3)
        self.receiver = Receiver()
        self.config = config = _config(tmp_path, prefix, self.receiver.port, client)
        self.procs = [ServiceProcess(config, bootstrap, tmp_path / f"state-{i}", env=env,
                                     log=tmp_path / f"run-{i}.log") for i in range(2)]
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.t0 = time.time_ns() - 60_000_000_000

    def start(self) -> list[set[str]]:
        """Start both instances; what each was assigned once the group settled."""
        for p in self.procs:
            p.start()
        for p in self.procs:
            p.wait_ready()
        return _wait_split(self.procs, [self.flood, self.districts])

    def send(self, value: float, after_s: int) -> None:
        """One reading per sensor (each on its own partition) at t0 + after_s."""
        for part, s in enumerate(SENSORS):
            self.producer.send(self.flood, key=s.encode(), value=_reading(s, self.t0 + after_s * 10**9, value),
                               partition=part)
        self.producer.flush()

    def fire(self) -> list[dict]:
        """Normal readings, then over the level: the firing records."""
        self.send(300.0, 0)
        # every sensor known on the district side first (its "seen" marker is the quorum's denominator);
        # otherwise two sensors' records could overtake the third's marker from the other instance
        self.wait_for(lambda: len(read_topic(self.bootstrap, self.districts, timeout=5)) >= len(SENSORS), 30,
                      "the sensors' seen markers on the district topic")
        self.send(450.0, 10)
        return self.wait_for(lambda: [a for a in self.records() if a["event"] == "firing"], 40, "the firing alert")

    def records(self) -> list[dict]:
        return _alerts(self.bootstrap, self.alerts)

    def wait_for(self, predicate, timeout: float, what: str):
        return _wait_for(predicate, timeout, self.procs, what)

    def close(self) -> None:
        self.producer.close()
        for i, p in enumerate(self.procs):
            p.stop()
            print(f"--- the end of run-{i}.log (pytest shows it when the test failed) ---\n{p.tail()}")
        self.receiver.stop()


#: Both readings consumers (about 20 s each on either broker); the confluent one rebuilds district partitions
#: from librdkafka's fetch-answer high watermark (see ConfluentReadingConsumer.highwater).
CLIENTS = [pytest.param("kafka-python", id="kafka-python"), pytest.param("confluent", id="confluent")]


@pytest.mark.parametrize("client", CLIENTS)
def test_one_episode_one_notification_across_two_instances(client, kafka_bootstrap, topic_prefix, tmp_path):
    if client == "confluent":
        pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed "
                            "(pip install stadtwacht[confluent]); the scale-out test runs on kafka-python only")
    assert district_partition(DISTRICT, 3) in range(3)
    scene = _Scene(kafka_bootstrap, topic_prefix, tmp_path, client)
    try:
        split = scene.start()
        # the district's sensors really are spread over both instances
        owners = {i for i, got in enumerate(split) for part in range(3) if f"{scene.flood}/{part}" in got}
        assert owners == {0, 1}
        # each page says which districts the other instance decides: together they cover the city once
        states = [json.loads(p.get("/api/state")[1]) for p in scene.procs]
        everything = {f["properties"]["id"] for f in states[0]["districts"]["features"]}
        elsewhere = [set(st["elsewhere"]) for st in states]
        assert all(elsewhere) and elsewhere[0] | elsewhere[1] == everything and not elsewhere[0] & elsewhere[1]
        firing = scene.fire()
        scene.send(300.0, 20)
        scene.wait_for(lambda: [a for a in scene.records() if a["event"] == "resolved"], 40, "the all-clear")
        scene.wait_for(lambda: len(scene.receiver.posts) >= 2, 30, "two notifications")
        time.sleep(3.0)  # would a second instance (or a duplicate) still say something?

        records = scene.records()
        assert [(r["event"], r["districts"], r["seq"]) for r in records] == [
            ("firing", [DISTRICT], 1), ("resolved", [DISTRICT], 2)], records
        assert len(firing) == 1 and records[1]["alert_id"] == firing[0]["alert_id"]
        assert sorted(firing[0]["sensors"]) == sorted(SENSORS)
        alert_id = firing[0]["alert_id"]
        assert scene.receiver.refs() == [f"Ref: {alert_id}/1", f"Ref: {alert_id}/2"], scene.receiver.posts
        assert len(scene.receiver.posts) == 2
    finally:
        scene.close()


@pytest.mark.parametrize("end", ["sigterm", "sigkill"])
def test_an_episode_moves_with_its_district_acknowledgement_included(end, kafka_bootstrap, topic_prefix, tmp_path):
    """The instance owning the district stops (or is killed) while the alert is up and acknowledged: the other
    one carries the same episode on (no second firing, the acknowledgement kept) and sends the all-clear as seq 2."""
    import msgspec

    from stadtwacht.district_stage import EPISODE_KEY, EpisodeState

    auth = {"Authorization": "Bearer handover-token"}
    scene = _Scene(kafka_bootstrap, topic_prefix, tmp_path, env={"STADTWACHT_API_TOKEN": "handover-token"})
    try:
        split = scene.start()
        owner = next(i for i, got in enumerate(split)
                     if f"{scene.districts}/{district_partition(DISTRICT, 3)}" in got)
        survivor = scene.procs[1 - owner]
        (firing,) = scene.fire()
        alert_id = firing["alert_id"]
        status, body = scene.procs[owner].get(f"/api/alerts/{alert_id}/ack", data=b'{"operator": "Schmidt"}',
                                              headers=auth, method="POST")
        assert status == 200, body

        def handed_acked():
            states = [msgspec.msgpack.decode(r.value, type=EpisodeState)
                      for r in read_topic(kafka_bootstrap, scene.districts, timeout=5) if EPISODE_KEY in r.key]
            return [s for s in states if s.episode.acked_by == "Schmidt"]

        scene.wait_for(handed_acked, 30, "the acknowledged episode's state on the district topic")
        scene.procs[owner].stop() if end == "sigterm" else scene.procs[owner].kill()
        scene.procs = [survivor]
        want = {f"{t}/{p}" for t in (scene.flood, scene.districts) for p in range(3)}
        scene.wait_for(lambda: _assigned(survivor) == want, 60, "the survivor owning every partition")

        def carried_on():
            status, body = survivor.get("/api/alerts", headers=auth)
            return status == 200 and json.loads(body)["alerts"]

        (alert,) = scene.wait_for(carried_on, 60, "the episode carried on by the survivor")
        assert json.loads(survivor.get("/api/state")[1])["elsewhere"] == []  # it now decides every district
        assert (alert["alert_id"], alert["acked_by"]) == (alert_id, "Schmidt")
        time.sleep(3.0)  # would the survivor announce it again?
        assert [r["event"] for r in scene.records()] == ["firing"]

        scene.send(300.0, 20)
        scene.wait_for(lambda: len(scene.records()) >= 2, 40, "the all-clear")
        assert [(r["alert_id"], r["event"], r["seq"]) for r in scene.records()] == [
            (alert_id, "firing", 1), (alert_id, "resolved", 2)]
        scene.wait_for(lambda: len(scene.receiver.posts) >= 2, 30, "two notifications")
        assert scene.receiver.refs() == [f"Ref: {alert_id}/1", f"Ref: {alert_id}/2"], scene.receiver.posts
        # the survivor's CAP message of the all-clear references the firing the first owner sent
        doc = _cap(survivor, alert_id)
        assert cap_identifier(alert_id, 2) in doc and cap_identifier(alert_id, 1) in doc
    finally:
        scene.close()


def test_every_instance_shows_the_whole_city_and_forwards_acknowledgements(kafka_bootstrap, topic_prefix, tmp_path):
    """The instance not deciding the district shows its alert (from the owner's episode changelog) and passes an
    acknowledgement given there on to the owner, which applies it once and deletes the command."""
    from stadtwacht.district_stage import ACK_KEY

    auth = {"Authorization": "Bearer city-token"}
    scene = _Scene(kafka_bootstrap, topic_prefix, tmp_path, env={"STADTWACHT_API_TOKEN": "city-token"})
    try:
        split = scene.start()
        i = next(i for i, got in enumerate(split) if f"{scene.districts}/{district_partition(DISTRICT, 3)}" in got)
        owner, other = scene.procs[i], scene.procs[1 - i]
        (firing,) = scene.fire()
        alert_id = firing["alert_id"]

        def state_with(proc, want):
            st = json.loads(proc.get("/api/state")[1])
            return st if [a for a in st["alerts"] if a["alert_id"] == alert_id and want(a)] else None

        st = scene.wait_for(lambda: state_with(other, lambda a: a.get("remote")), 30, "the alert on the other page")
        assert st["elsewhere_shown"] and DISTRICT in st["elsewhere"]
        props = {f["properties"]["id"]: f["properties"] for f in st["districts"]["features"]}
        assert props[DISTRICT]["levels"]["flood"] == 1 and props[DISTRICT]["watched"]
        listed = json.loads(other.get("/api/alerts", headers=auth)[1])["alerts"]
        assert [(a["alert_id"], a["remote"]) for a in listed] == [(alert_id, True)]
        # the Atom feed and the CAP message on the other instance too (behind a load balancer either answers)
        assert cap_identifier(alert_id, 1) in other.get("/cap/atom.xml")[1].decode()
        doc = scene.wait_for(lambda: _cap(other, alert_id), 30, "the CAP message on the other instance")
        assert cap_identifier(alert_id, 1) in doc and "<msgType>Alert</msgType>" in doc

        # the level the operator saw goes with the acknowledgement: one the alert has risen above is refused
        status, body = other.get(f"/api/alerts/{alert_id}/ack", data=b'{"operator": "Schmidt", "level": 0}',
                                 headers=auth, method="POST")
        assert status == 409, body
        status, body = other.get(f"/api/alerts/{alert_id}/ack", data=b'{"operator": "Schmidt", "level": 1}',
                                 headers=auth, method="POST")
        assert status == 202, body
        scene.wait_for(lambda: [a for a in json.loads(owner.get("/api/alerts", headers=auth)[1])["alerts"]
                                if a["acked_by"] == "Schmidt"], 30, "the owner applying the acknowledgement")
        scene.wait_for(lambda: state_with(other, lambda a: a["acked_by"] == "Schmidt"), 30,
                       "the acknowledgement on the other page")
        commands = [r.value for r in read_topic(kafka_bootstrap, scene.districts, timeout=5) if ACK_KEY in r.key]
        assert len(commands) == 2 and commands[-1] is None  # the command, then its tombstone once applied
        assert msgspec.msgpack.decode(commands[0]) == {"operator": "Schmidt", "level": 1}

        scene.send(300.0, 20)
        scene.wait_for(lambda: not json.loads(other.get("/api/state")[1])["alerts"], 40,
                       "the all-clear on the other page")
        assert [r["event"] for r in scene.records()] == ["firing", "resolved"]  # acknowledging sent nothing
        # the readings topics' messages are counted, not the district topic's (StadtwachtTopicSilent would take
        # a quiet district topic for a feed that stopped)
        for proc in scene.procs:
            consumed = {lab["topic"] for n, lab, _ in parse_metrics(proc.get("/metrics")[1].decode())
                        if n == "stadtwacht_messages_consumed_total"}
            assert consumed == {scene.flood}
        # the other instance's timeline, history API, CAP message and feed have the owner's events
        want = [(alert_id, "resolved"), (alert_id, "firing")]
        scene.wait_for(lambda: [(r["alert_id"], r["event"]) for r in json.loads(other.get("/api/state")[1])[
            "timeline"]] == want, 30, "the owner's events in the other instance's timeline")
        history = json.loads(other.get("/api/alerts/history", headers=auth)[1])["events"]
        assert [(r["alert_id"], r["seq"]) for r in history] == [(alert_id, 2), (alert_id, 1)]
        doc = scene.wait_for(lambda: (d := _cap(other, alert_id)) and cap_identifier(alert_id, 2) in d and d, 30,
                             "the all-clear's CAP message on the other instance")
        assert cap_identifier(alert_id, 1) in doc  # its references
        feed = other.get("/cap/atom.xml")[1].decode()  # the entry is the all-clear now, for a day
        assert cap_identifier(alert_id, 1) not in feed and cap_identifier(alert_id, 2) in feed
    finally:
        scene.close()


def test_a_silence_set_on_either_instance_keeps_the_district_quiet(kafka_bootstrap, topic_prefix, tmp_path):
    """A silence created through the API of the instance that does not decide the district reaches the owner,
    whose alert there is then recorded but not notified; deleted through the owner, it is gone on both."""
    auth = {"Authorization": "Bearer city-token"}
    scene = _Scene(kafka_bootstrap, topic_prefix, tmp_path, env={"STADTWACHT_API_TOKEN": "city-token"})

    def silences(proc) -> list[str]:
        return [s["id"] for s in json.loads(proc.get("/api/silences", headers=auth)[1])["silences"]]

    try:
        split = scene.start()
        i = next(i for i, got in enumerate(split) if f"{scene.districts}/{district_partition(DISTRICT, 3)}" in got)
        owner, other = scene.procs[i], scene.procs[1 - i]
        status, body = other.get("/api/silences", data=json.dumps(
            {"districts": [DISTRICT], "comment": "Pegelwartung", "created_by": "Schmidt"}).encode(), headers=auth,
            method="POST")
        assert status == 201, body
        answer = json.loads(body)
        assert answer["shared"] is True
        silence_id = answer["silence"]["id"]
        scene.wait_for(lambda: silence_id in silences(owner), 30, "the silence on the owner")

        (firing,) = scene.fire()
        alert_id = firing["alert_id"]
        time.sleep(3.0)  # group_wait and the outbox: a notification would have gone out by now
        assert scene.receiver.posts == []
        here = json.loads(owner.get("/api/alerts", headers=auth)[1])["alerts"]
        assert [(a["alert_id"], a["silenced"]) for a in here] == [(alert_id, True)]
        scene.wait_for(lambda: [a for a in json.loads(other.get("/api/alerts", headers=auth)[1])["alerts"]
                                if a["alert_id"] == alert_id and a["remote"] and a["silenced"]], 30,
                       "the remote alert shown as silenced")

        status, body = owner.get(f"/api/silences/{silence_id}", headers=auth, method="DELETE")
        assert status == 200 and json.loads(body)["shared"] is True, body
        scene.wait_for(lambda: not silences(other), 30, "the deletion on the other instance")
        assert silences(owner) == []

        # the command, run anywhere with the configuration (its own state directory), shares the same way
        def command(*args: str) -> dict:
            done = subprocess.run([sys.executable, "-m", "stadtwacht", "silence", *args, "--config", str(scene.config),
                                   "--bootstrap", kafka_bootstrap, "--state-dir", str(tmp_path / "cli-state")],
                                  capture_output=True, text=True, timeout=60, cwd=REPO)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        added = command("add", "--district", DISTRICT, "--comment", "Bauarbeiten")
        assert added["shared"] is True
        scene.wait_for(lambda: all(silences(p) == [added["id"]] for p in scene.procs), 30,
                       "the command's silence on both instances")
        assert command("remove", "--id", added["id"]) == {"deleted": added["id"], "shared": True}
        scene.wait_for(lambda: not any(silences(p) for p in scene.procs), 30,
                       "the command's deletion on both instances")
    finally:
        scene.close()
