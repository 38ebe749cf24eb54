"""The whole-city view of an instance among several: episode changelog records in, remote alerts out."""

from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry

from alerting.episodes import Episode
from alerting.store import Silence
from ingest.config import KafkaConfig
from stadtwacht.city_view import CityView
from stadtwacht.config import load_config
from stadtwacht.district_stage import SILENCE_KEY, EpisodeState, episode_key
from stadtwacht.pipeline import Pipeline
from stadtwacht.state_view import build_state

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
