"""The whole-city view of an instance among several: episode changelog records in, remote alerts out."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import msgspec
import pytest
from lxml import etree
from prometheus_client import CollectorRegistry

from alerting.atom import ATOM_NS, atom_feed
from alerting.cap import cap_filename, cap_identifier
from alerting.episodes import Episode
from alerting.record import encode_record
from alerting.store import Silence
from ingest.config import KafkaConfig
from stadtwacht.city_view import CityView, send_silence
from stadtwacht.config import load_config
from stadtwacht.district_stage import SILENCE_KEY, EpisodeState, episode_key
from stadtwacht.outputs import AlertOutputs
from stadtwacht.pipeline import Pipeline
from stadtwacht.state_view import build_state
from tests.support.kafka_topics import create_topics, producer, read_topic
from tests.support.service import wait_until

S = 1_000_000_000
T0 = 1_750_000_000 * S


def _episode(district: str, hazard: str = "flood", quantity: str = "water_level", level: int = 2, **kw) -> Episode:
    base = dict(alert_id=f"{hazard}-{district}", district=district, district_name=district.title(), hazard=hazard,
                quantity=quantity, level=level, level_name=f"Stufe {level}", seq=2, started_ns=T0,
                last_ns=T0 + 60 * S, value=420.0, threshold=400.0, rule="pegel", sensors=("pegel-1",),
                prev_level=1)
    return Episode(**{**base, **kw})


def _record(ep: Episode, active: bool = True) -> tuple[bytes, bytes]:
    return episode_key(ep), msgspec.msgpack.encode(EpisodeState(episode=ep, active=active))


def _view() -> CityView:
    return CityView(KafkaConfig(), "127.0.0.1:9", "districts", 3, producer=None)


def test_the_newest_state_of_each_active_episode_is_kept():
    view = _view()
    first, acked = _episode("ost"), _episode("ost", acked_by="Schmidt", seq=3)
    assert view.take(*_record(first)) and view.take(*_record(acked))
    assert [(e.alert_id, e.acked_by, e.seq) for e in view.episodes()] == [("flood-ost", "Schmidt", 3)]
    assert not view.take(b"ost|pegel-1|pegel", b"\x80")  # sensor level records are not episodes
    assert not view.take(None, b"x") and not view.take(b"ost|~episode|flood|water_level", b"not msgpack")
    assert len(view.episodes()) == 1
    assert view.take(*_record(acked, active=False))  # ended
    assert view.episodes() == []
    assert not view.take(*_record(acked, active=False))  # nothing left to end


def test_remote_alerts_leave_out_the_districts_decided_here():
    view = _view()
    view.take(*_record(_episode("ost")))
    view.take(*_record(_episode("mitte", "air", "no2", 1, seq=1, prev_level=0)))
    (alert,) = view.remote_alerts({"mitte"})
    assert (alert["alert_id"], alert["district"], alert["remote"], alert["trend"]) == ("flood-ost", "ost", True,
                                                                                       "rising")
    assert alert["started_at"].startswith("2025-06-15T15:06:40") and alert["acked_by"] is None
    assert {a["alert_id"] for a in view.remote_alerts(set())} == {"flood-ost", "air-mitte"}


def test_shared_silences_are_handed_to_the_store_and_mark_remote_alerts():
    """Silence records (any instance's API) go to ``on_silence``, tombstones as None, undecodable ones nowhere;
    remote alerts say whether the silences known here cover them."""
    taken: list[tuple[str, Silence | None]] = []
    view = CityView(KafkaConfig(), "127.0.0.1:9", "districts", 3, producer=None,
                    on_silence=lambda sid, s: taken.append((sid, s)) or True,
                    silenced=lambda ep: ep.district == "ost")
    silence = Silence(id="s1", districts=("ost",), sensors=(), hazard="", starts_ns=T0, ends_ns=0, comment="Wartung",
                      created_by="Schmidt", source="api")
    assert view.take(SILENCE_KEY + b"s1", msgspec.msgpack.encode(silence))
    assert view.take(SILENCE_KEY + b"s1", None)
    assert not view.take(SILENCE_KEY + b"s2", b"not msgpack")
    assert taken == [("s1", silence), ("s1", None)]
    assert view.episodes() == []  # not an episode
    view.take(*_record(_episode("ost")))
    view.take(*_record(_episode("mitte", "air", "no2", 1, seq=1, prev_level=0)))
    assert {a["district"]: a["silenced"] for a in view.remote_alerts(set())} == {"ost": True, "mitte": False}


def test_the_page_shows_other_instances_districts_once_the_changelog_is_read(tmp_path):
    cfg, _ = load_config(None)
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path)
    try:
        pipeline.watched_districts = {"mitte", "nord"}
        view = pipeline.city_view = _view()
        view.take(*_record(_episode("ost", level=3)))
        view.take(*_record(_episode("feuerbach", "sensor", "stale", 1)))
        view.take(*_record(_episode("mitte", level=4)))  # decided here: the local state counts, not this
        state = build_state(pipeline)
        props = {f["properties"]["id"]: f["properties"] for f in state["districts"]["features"]}
        assert props["ost"]["levels"]["flood"] == 3 and props["mitte"]["levels"]["flood"] == 0
        assert [a["alert_id"] for a in state["alerts"]] == ["flood-ost", "sensor-feuerbach"]
        assert all(a["remote"] for a in state["alerts"])
        # in the page's shape: a silence set from the page names the district (none would silence the city)
        assert [(a["districts"], a["district_names"]) for a in state["alerts"]] == [
            (["ost"], ["Ost"]), (["feuerbach"], ["Feuerbach"])]
        assert [(h["sensor_id"], h["kind"]) for h in state["sensor_health"]] == [("pegel-1", "stale")]
        # not read to its end yet: districts without an episode there may still have one
        assert state["elsewhere_shown"] is False and props["vaihingen"]["watched"] is False
        view._caught_up = True
        state = build_state(pipeline)
        props = {f["properties"]["id"]: f["properties"] for f in state["districts"]["features"]}
        assert state["elsewhere_shown"] is True and all(p["watched"] for p in props.values())
        assert "vaihingen" in state["elsewhere"]
    finally:
        pipeline.alerts.close()


def _alerts_topic(*records) -> list[SimpleNamespace]:
    """Alerts topic records as the reader's consumer hands them over."""
    return [SimpleNamespace(key=r.alert_id.encode(), value=encode_record(r)) for r in records]


@pytest.fixture
def city(tmp_path):
    """A pipeline whose city view reads an alerts topic, the CAP messages of what it reads written here."""
    cfg, _ = load_config(None)
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path)
    outputs = AlertOutputs(pipeline)
    pipeline.city_view = CityView(KafkaConfig(), "127.0.0.1:9", "districts", 3, producer=None,
                                  alerts_topic="alerts", on_alert=outputs.write_cap_once)
    yield pipeline, outputs
    pipeline.alerts.close()


def test_other_instances_alert_records_give_the_timeline_the_feed_and_cap_messages(city, tmp_path):
    """Read back from the alerts topic, another instance's records join this one's timeline and are written as
    CAP messages here (references included); its active alert is in this instance's Atom feed."""
    pipeline, outputs = city
    view = pipeline.city_view
    pipeline.watched_districts = {"mitte"}
    first = _episode("ost", seq=1, level=1, prev_level=0, last_ns=T0)
    now = replace(first, seq=2, level=2, prev_level=1, last_ns=T0 + 60 * S)
    firing, update = first.record("firing", T0), now.record("update", T0 + 60 * S)
    view.take(*_record(now))
    assert view._take_alerts(_alerts_topic(firing, update))
    assert not view._take_alerts(_alerts_topic(update))  # published twice: nothing new

    assert pipeline.alert_history(10) == [update, firing]
    timeline = build_state(pipeline)["timeline"]
    assert [(r["alert_id"], r["seq"]) for r in timeline] == [("flood-ost", 2), ("flood-ost", 1)]
    assert pipeline.active_records() == [update]
    feed = etree.fromstring(atom_feed(pipeline.active_records(), base_url="http://127.0.0.1:1"))
    assert [e.text for e in feed.iter(f"{{{ATOM_NS}}}id")][1:] == [cap_identifier("flood-ost", 2)]

    cap = tmp_path / "cap"
    latest = etree.parse(str(cap / cap_filename("flood-ost"))).getroot()
    ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
    assert latest.findtext("cap:identifier", namespaces=ns) == cap_identifier("flood-ost", 2)
    assert cap_identifier("flood-ost", 1) in latest.findtext("cap:references", namespaces=ns)
    (cap / cap_filename("flood-ost", 1)).write_bytes(b"kept")
    outputs.write_cap_once(firing)  # written already (here, or by the instance itself): left as it is
    assert (cap / cap_filename("flood-ost", 1)).read_bytes() == b"kept"


def test_the_cap_message_of_an_episode_taken_over_references_the_previous_owners_events(city, tmp_path):
    """After a handover the new owner's store has the episode but not its earlier events: their records, read
    back from the alerts topic, give the all-clear's CAP message its references."""
    pipeline, outputs = city
    pipeline.watched_districts = {"ost"}
    first = _episode("ost", seq=1, level=1, prev_level=0, last_ns=T0)
    pipeline.city_view._take_alerts(_alerts_topic(first.record("firing", T0)))
    resolved = replace(first, seq=2, level=0, prev_level=1).record("resolved", T0 + 60 * S)
    outputs.emit([resolved])
    doc = (tmp_path / "cap" / cap_filename("flood-ost", 2)).read_bytes()
    assert cap_identifier("flood-ost", 1).encode() in doc


def test_cap_messages_of_records_read_back_are_written_while_the_reader_reads_on(city, tmp_path):
    """The reader hands what it reads back to the CAP writer's thread: a replica reading a long alerts topic at
    start is not held up by the writing (its whole-city view waits for the reader)."""
    pipeline, outputs = city
    first = _episode("ost", seq=1, level=1, prev_level=0, last_ns=T0)
    records = [first.record("firing", T0), replace(first, seq=2, level=2).record("update", T0 + S)]
    let_through = threading.Event()
    write = outputs.write_cap_once

    def held_back(r) -> None:
        let_through.wait(30)
        write(r)

    outputs.write_cap_once = held_back
    view = pipeline.city_view
    view.on_alert = outputs.write_cap_later  # as the runner wires it
    assert view._take_alerts(_alerts_topic(*records))  # back at once, nothing written yet
    assert view.alert_log.episode_records("flood-ost") == records
    cap = tmp_path / "cap"
    assert not list(cap.glob("*.xml"))
    let_through.set()
    outputs.wait_written()
    assert {p.name for p in cap.glob("*.xml")} == {cap_filename("flood-ost", seq) for seq in (None, 1, 2)}


@pytest.mark.broker
def test_the_reader_shares_what_the_district_topic_lacks_and_lifts_what_it_dropped(kafka_bootstrap, topic_prefix,
                                                                                  tmp_path):
    """Through a broker: once the reader has read the district topic from its start, a silence this instance took
    from the topic before but the topic no longer holds (deleted while it was away, the tombstone compacted
    away) is lifted, one the topic holds stays, one deleted by a tombstone still there goes, and one made here
    while the broker was away is shared; later, what is made or deleted here and not yet on the topic is shared
    on the reader's next round."""
    topic = f"{topic_prefix}.districts"
    create_topics(kafka_bootstrap, [topic], partitions=1)

    def silence(silence_id: str, district: str) -> Silence:
        return Silence(id=silence_id, districts=(district,), sensors=(), hazard="", starts_ns=T0, ends_ns=0,
                       comment="Wartung", created_by="Schmidt", source="api")

    def on_topic() -> dict[str, bool]:
        """Each silence on the topic: whether its newest record holds it (False: a tombstone)."""
        return {r.key[len(SILENCE_KEY):].decode(): r.value is not None
                for r in read_topic(kafka_bootstrap, topic, timeout=5)}

    prod = producer(kafka_bootstrap)
    send_silence(prod, topic, "kept", silence("kept", "ost"))
    send_silence(prod, topic, "ended", silence("ended", "nord"))
    send_silence(prod, topic, "ended", None)
    cfg, _ = load_config(None)
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path)
    alerts = pipeline.alerts
    view = None
    try:
        for sid, district in (("kept", "ost"), ("ended", "nord"), ("gone", "west")):  # read from the topic before
            alerts.take_shared_silence(sid, silence(sid, district))
        made_here = alerts.silence(districts=["mitte"], comment="broker away")["id"]
        view = CityView(KafkaConfig(), kafka_bootstrap, topic, 1, prod, on_silence=alerts.take_shared_silence,
                        unshared=alerts.unshared_silences, share_retry_s=0.5)
        view.start()
        wait_until(lambda: view.caught_up and on_topic().get(made_here), 30, what="the silence made here on the topic")
        assert {s["id"] for s in alerts.silences()} == {"kept", made_here}
        wait_until(lambda: alerts.unshared_silences({"kept", made_here}, whole=True) == [], 10,
                   what="the silence made here read back")
        later = alerts.silence(districts=["sued"])["id"]
        assert alerts.unsilence("kept")  # as if the API's own sharing had failed
        wait_until(lambda: on_topic().get(later) and on_topic()["kept"] is False, 30,
                   what="the next round's silence and deletion on the topic")
        assert {s["id"] for s in alerts.silences()} == {made_here, later}
    finally:
        if view is not None:
            view.stop()
        prod.close()
        alerts.close()
