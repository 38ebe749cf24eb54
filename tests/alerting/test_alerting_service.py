"""AlertService with file channels and an injected clock: grouping, routing, durability, timers, silences."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from alerting.service import AlertService
from tests.alerting.alerting_helpers import T0, FakeClock, S, file_config, level, read_file_channel

DISTRICTS = {"mitte": "Mitte", "west": "West", "ost": "Ost", "bad-cannstatt": "Bad Cannstatt"}


def make(tmp_path, clock=None, registry=None, **cfg):
    return AlertService(file_config(tmp_path, **cfg), tmp_path / "state", DISTRICTS,
                        registry or CollectorRegistry(), clock=clock or FakeClock())


def refs(msgs):
    return [line for m in msgs for line in m["body"].splitlines() if line.startswith("Ref: ")]


def test_flood_top_level_goes_out_at_once_to_control_room_and_kats(tmp_path):
    svc = make(tmp_path)
    recs = svc.apply([level("mitte", 3)])
    svc.deliver_pending()
    assert [r.event for r in recs] == ["firing"]
    for ch in ("leitstelle", "kats"):
        assert refs(read_file_channel(tmp_path, ch)) == [f"Ref: {recs[0].alert_id}/1"]
    assert read_file_channel(tmp_path, "umwelt") == []
    svc.close()


def test_idempotent_apply_emits_nothing(tmp_path):
    svc = make(tmp_path)
    assert len(svc.apply([level("mitte", 3)])) == 1
    assert svc.apply([level("mitte", 3, t=T0 + S)]) == []
    assert svc.apply([level("west", 0)]) == []
    assert len(svc.outbox()) == 2  # one message, two channels
    svc.close()


def test_air_burst_is_grouped_within_group_wait(tmp_path):
    clock = FakeClock()
    svc = make(tmp_path, clock)
    svc.apply([level("mitte", 1, hazard="air", quantity="pm10")])
    clock.advance(10)
    svc.apply([level("west", 1, hazard="air", quantity="pm10"), level("ost", 1, hazard="air", quantity="pm10")])
    svc.tick()
    svc.deliver_pending()
    assert read_file_channel(tmp_path, "umwelt") == []  # still inside group_wait
    clock.advance(21)
    svc.tick()
    svc.deliver_pending()
    msgs = read_file_channel(tmp_path, "umwelt")
    assert len(msgs) == 1 and "Mitte, West, Ost" in msgs[0]["title"]
    assert len(refs(msgs)) == 3
    assert read_file_channel(tmp_path, "leitstelle") == []  # air level 1: environment office only
    svc.close()


def test_update_flushes_the_pending_firing_first(tmp_path):
    clock = FakeClock()
    svc = make(tmp_path, clock)
    a = svc.apply([level("mitte", 2)])[0].alert_id  # flood 2: 30 s group_wait
    clock.advance(5)
    svc.apply([level("mitte", 3, t=T0 + 5 * S)])  # flood 3: 0 s, must not overtake the firing
    svc.deliver_pending()
    assert refs(read_file_channel(tmp_path, "leitstelle")) == [f"Ref: {a}/1", f"Ref: {a}/2"]
    assert refs(read_file_channel(tmp_path, "kats")) == [f"Ref: {a}/2"]
    svc.close()


def test_all_clear_only_to_those_warned(tmp_path):
    clock = FakeClock()
    svc = make(tmp_path, clock)
    a = svc.apply([level("mitte", 3)])[0].alert_id
    svc.apply([level("mitte", 1, t=T0 + S)])  # eases: routes say control room, kats heard the warning too
    clock.advance(60)
    svc.apply([level("mitte", 0, t=T0 + 60 * S)])
    clock.advance(30)  # the all-clear waits the default group_wait (all-clears of a burst are grouped)
    svc.tick()
    svc.deliver_pending()
    assert refs(read_file_channel(tmp_path, "kats"))[-1] == f"Ref: {a}/3"
    assert refs(read_file_channel(tmp_path, "leitstelle")) == [f"Ref: {a}/1", f"Ref: {a}/2", f"Ref: {a}/3"]
    assert read_file_channel(tmp_path, "umwelt") == []
    assert read_file_channel(tmp_path, "kats")[-1]["title"].startswith("ENTWARNUNG")
    svc.close()


def test_durable_state_and_offsets_across_reopen(tmp_path):
    clock = FakeClock()
    svc = make(tmp_path, clock)
    a = svc.apply([level("mitte", 2)], offsets={("stadtwacht.levels", 0): 41})[0].alert_id
    svc.apply([level("west", 1, hazard="air", quantity="pm10")], offsets={("stadtwacht.levels", 0): 42,
                                                                          ("stadtwacht.levels", 1): 7})
    svc.close()  # nothing delivered, air still inside group_wait
    svc2 = make(tmp_path, clock)
    assert svc2.applied_offsets() == {("stadtwacht.levels", 0): 42, ("stadtwacht.levels", 1): 7}
    assert svc2.recovery.active_episodes == 2 and svc2.recovery.pending_events == 2
    assert svc2.apply([level("mitte", 2)]) == []  # replaying the same change does not double-apply
    recs = svc2.apply([level("mitte", 3, t=T0 + S)])
    assert (recs[0].alert_id, recs[0].seq, recs[0].event) == (a, 2, "update")
    clock.advance(31)
    svc2.tick()
    svc2.deliver_pending()
    assert refs(read_file_channel(tmp_path, "leitstelle")) == [f"Ref: {a}/1", f"Ref: {a}/2"]
    assert len(read_file_channel(tmp_path, "umwelt")) == 1
    assert [r.seq for r in svc2.history(10)] == [2, 1, 1]
    svc2.close()


def test_reconcile_resolves_updates_and_fires(tmp_path):
    svc = make(tmp_path)
    svc.apply([level("mitte", 2), level("west", 1)])
    recs = svc.reconcile([level("west", 2, t=T0 + S), level("ost", 1, t=T0 + S)])
    assert sorted((r.districts[0], r.event) for r in recs) == [("mitte", "resolved"), ("ost", "firing"),
                                                             ("west", "update")]
    assert sorted(a["district"] for a in svc.active()) == ["ost", "west"]
    svc.close()


def test_a_partial_picture_lowers_or_resolves_only_what_it_sees_whole(tmp_path):
    # docs/reliability.md finding 10: a restart owning one of two partitions took the other's alerts for gone
    svc = make(tmp_path)
    svc.apply([level("mitte", 2), level("west", 2), level("ost", 1), level("nord", 2)])
    seen = []

    def sees(district, sensors):
        seen.append((district, sensors))
        return district == "nord"  # only nord's sensors are all on partitions this process reads

    recs = svc.reconcile([level("west", 1, t=T0 + S), level("ost", 2, t=T0 + S), level("sued", 1, t=T0 + S)],
                         sees=sees)
    assert sorted((r.districts[0], r.event, r.level) for r in recs) == [
        ("nord", "resolved", 0), ("ost", "update", 2), ("sued", "firing", 1)]
    assert ("west", ("pegel-1",)) in seen  # judged by the sensors holding the episode up
    assert svc.apply([level("ost", 0, t=T0 + 2 * S)], sees=sees) == []
    assert sorted((a["district"], a["level"]) for a in svc.active()) == [("mitte", 2), ("ost", 2), ("sued", 1),
                                                                      ("west", 2)]
    # the whole picture again: what the partial one held back is judged now
    recs = svc.reconcile([level("west", 1, t=T0 + 3 * S), level("sued", 1, t=T0 + 3 * S)])
    assert sorted((r.districts[0], r.event) for r in recs) == [("mitte", "resolved"), ("ost", "resolved"),
                                                             ("west", "update")]
    svc.close()


def test_a_new_owner_carries_on_handed_episodes_without_events(tmp_path):
    old, new = make(tmp_path / "old"), make(tmp_path / "new")
    fired = old.apply([level("mitte", 2), level("west", 1), level("ost", 1)])
    old.ack(fired[0].alert_id, "Schmidt")
    old.apply([level("ost", 0, t=T0 + S)])
    new.apply([level("west", 3, t=T0 - S)])  # a stale episode of an earlier ownership, superseded
    handed = [(ep, True) for ep in old.episodes({"mitte", "west"})]
    handed.append((old.episode(fired[2].alert_id), False))  # ost ended: nothing to carry on
    assert new.adopt(handed) == 2
    view = {a["district"]: a for a in new.active()}
    assert {d: (v["alert_id"], v["level"]) for d, v in view.items()} == {
        "mitte": (fired[0].alert_id, 2), "west": (fired[1].alert_id, 1)}
    assert view["mitte"]["acked_by"] == "Schmidt"
    # the reconcile against the rebuilt levels announces nothing new; later changes continue the sequence
    assert new.reconcile([level("mitte", 2, t=T0 + S), level("west", 1, t=T0 + S)]) == []
    (rec,) = new.apply([level("mitte", 0, t=T0 + 2 * S)])
    assert (rec.alert_id, rec.seq, rec.event) == (fired[0].alert_id, 2, "resolved")
    # handing back an older state changes nothing; the final state of an episode ends the local copy
    assert new.adopt(handed[:1]) == 0
    assert new.adopt([(new.episode(rec.alert_id), False)]) == 0  # already ended here
    assert old.adopt([(new.episode(rec.alert_id), False)]) == 1
    assert sorted(a["district"] for a in old.active()) == ["west"]
    assert old.retire({"west"}) == [fired[1].alert_id] and old.active() == []
    old.close()
    new.close()


def test_reminders_and_escalation_until_ack(tmp_path):
    clock = FakeClock()
    svc = make(tmp_path, clock, group_wait="0s")
    a = svc.apply([level("mitte", 2)])[0].alert_id  # route: control room, escalate to kats after 10 min
    svc.deliver_pending()
    clock.advance(9 * 60)
    svc.tick()
    svc.deliver_pending()
    assert read_file_channel(tmp_path, "kats") == []
    clock.advance(60)
    svc.tick()
    svc.deliver_pending()
    kats = read_file_channel(tmp_path, "kats")
    assert len(kats) == 1 and kats[0]["title"].startswith("ESKALATION") and refs(kats) == [f"Ref: {a}/1"]
    clock.advance(50 * 60)  # one hour after firing: reminder to everyone warned
    svc.tick()
    svc.deliver_pending()
    assert read_file_channel(tmp_path, "leitstelle")[-1]["title"].startswith("ERINNERUNG")
    assert read_file_channel(tmp_path, "kats")[-1]["title"].startswith("ERINNERUNG")
    view = svc.ack(a, "Schmidt <b>")
    assert view["acked_by"] == "Schmidt"
    n = len(svc.outbox())
    clock.advance(5 * 3600)
    svc.tick()
    assert len(svc.outbox()) == n  # acknowledged: no more reminders
    svc.apply([level("mitte", 0, t=T0 + 3600 * S)])
    svc.deliver_pending()
    assert read_file_channel(tmp_path, "kats")[-1]["title"].startswith("ENTWARNUNG")  # escalated => warned
    svc.close()


def test_silence_records_but_does_not_notify(tmp_path):
    clock = FakeClock()
    svc = make(tmp_path, clock)
    sil = svc.silence(districts=["mitte"], ends_ns=clock.now + 3600 * S, comment="Wartung")
    svc.apply([level("mitte", 3), level("west", 3, sensors=("pegel-7",))])
    svc.apply([level("mitte", 0, t=T0 + S)])
    svc.deliver_pending()
    lines = refs(read_file_channel(tmp_path, "leitstelle"))
    assert len(lines) == 1 and len(svc.history(10)) == 3  # mitte recorded, only west notified
    assert svc.unsilence(sil["id"]) and not svc.unsilence(sil["id"])
    svc.silence(sensors=["pegel-7"])
    svc.apply([level("west", 4, t=T0 + 2 * S, sensors=("pegel-7",))])
    svc.apply([level("west", 0, t=T0 + 3 * S)])
    clock.advance(30)
    svc.tick()
    svc.deliver_pending()
    titles = [m["title"] for m in read_file_channel(tmp_path, "leitstelle")]
    assert [t.split(":")[0] for t in titles] == ["WARNUNG", "ENTWARNUNG"]  # update silenced, all-clear not
    svc.close()


def test_config_silence_and_active_view(tmp_path):
    from alerting.config import SilenceConfig
    svc = make(tmp_path, silences=[SilenceConfig(id="w", hazard="air", starts="2025-01-01T00:00:00+01:00",
                                                 ends="2026-01-01T00:00:00+01:00")])
    svc.apply([level("mitte", 2, hazard="air", quantity="pm10")])
    [view] = svc.active()
    assert view["silenced"] is True and view["notified"] == []
    assert svc.silences()[0]["source"] == "config"
    svc.close()


def test_silences_the_district_topic_lacks_are_shared_and_those_it_dropped_are_lifted(tmp_path):
    """What the district topic lacks of this instance's silences (made or deleted here while the broker could not
    take it) is handed back for sharing; once the topic was read whole, a silence it held once but no longer holds
    (deleted through another instance, its tombstone compacted away) is lifted. The configuration's stay."""
    from alerting.config import SilenceConfig
    from alerting.store import Silence

    def silence(silence_id: str, district: str) -> Silence:
        return Silence(id=silence_id, districts=(district,), sensors=(), hazard="", starts_ns=T0, ends_ns=0,
                       comment="", created_by="Schmidt", source="api")

    svc = make(tmp_path, FakeClock(), silences=[SilenceConfig(id="w", hazard="air")])
    made_here = svc.silence(districts=["mitte"], comment="broker away")["id"]
    for sid, district in (("kept", "ost"), ("gone", "west"), ("deleted-here", "nord")):  # read from the topic
        assert svc.take_shared_silence(sid, silence(sid, district))
    assert not svc.take_shared_silence("kept", silence("kept", "ost"))  # read again: nothing changes
    assert svc.unsilence("deleted-here")
    assert not svc.take_shared_silence("deleted-here", silence("deleted-here", "nord"))  # read again: stays deleted

    def ids(pairs) -> list[tuple[str, str | None]]:
        return [(sid, s and s.id) for sid, s in pairs]

    topic = {"kept", "deleted-here"}  # "gone" was deleted elsewhere and its tombstone compacted away
    assert ids(svc.unshared_silences(topic)) == [(made_here, made_here), ("deleted-here", None)]
    assert {s["id"] for s in svc.silences()} == {"w", made_here, "kept", "gone"}  # reading on: nothing lifted
    assert ids(svc.unshared_silences(topic, whole=True)) == [(made_here, made_here), ("deleted-here", None)]
    assert {s["id"] for s in svc.silences()} == {"w", made_here, "kept"}
    svc.apply([level("west", 3)])  # no longer silenced
    svc.deliver_pending()
    assert len(refs(read_file_channel(tmp_path, "leitstelle"))) == 1

    # both read back from the topic: nothing left to share
    assert not svc.take_shared_silence("deleted-here", None)
    assert not svc.take_shared_silence(made_here, svc.silence_by_id(made_here))
    topic = {"kept", made_here}
    assert svc.unshared_silences(topic, whole=True) == []
    # deleted through the API before it was read back, the broker did not take the deletion
    other = svc.silence(districts=["sued"])["id"]
    assert svc.unsilence(other)
    svc.silence_deletion_unshared(other)
    assert ids(svc.unshared_silences(topic | {other})) == [(other, None)]
    assert svc.unshared_silences(topic, whole=True) == []  # the topic does not hold it: nothing left to delete
    assert svc.unshared_silences(topic | {other}) == []
    assert svc.unshared_silences({"kept"}, whole=True) == [] and svc.silence_by_id(made_here) is None
    assert [s["id"] for s in svc.silences()] == ["w", "kept"]
    svc.close()


def test_listeners_get_committed_records(tmp_path):
    svc = make(tmp_path)
    seen = []
    svc.listeners.append(seen.append)
    svc.listeners.append(lambda r: 1 / 0)  # a broken listener must not break apply
    recs = svc.apply([level("mitte", 1), level("west", 2)])
    assert seen == recs
    svc.close()


def value(reg, name, **labels):
    v = reg.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_metrics(tmp_path):
    reg = CollectorRegistry()
    clock = FakeClock()
    svc = make(tmp_path, clock, registry=reg)
    # every channel's outcomes are exported at 0 from the start: Prometheus' increase() cannot see a series
    # that appears at 1, so a channel's first failure would never fire StadtwachtNotificationsFailing
    for outcome in ("success", "retry", "failed", "expired"):
        assert reg.get_sample_value("stadtwacht_notifications_total", {"channel": "file://", "outcome": outcome}) == 0
    svc.apply([level("mitte", 3, t=T0 - 2 * S), level("west", 1, hazard="air", quantity="pm10")])
    assert value(reg, "stadtwacht_active_alerts", hazard="flood", level="3") == 1
    assert value(reg, "stadtwacht_alert_events_total", event="firing") == 2
    assert value(reg, "stadtwacht_outbox_depth") == 2
    svc.deliver_pending()
    assert value(reg, "stadtwacht_notifications_total", channel="file://", outcome="success") == 2
    assert value(reg, "stadtwacht_outbox_depth") == 0
    assert value(reg, "stadtwacht_notification_latency_seconds_count") == 2
    assert value(reg, "stadtwacht_notification_latency_seconds_sum") == 4.0  # 2 s after the reading, twice
    svc.apply([level("mitte", 0, t=T0 + S)])
    assert value(reg, "stadtwacht_active_alerts", hazard="flood", level="3") == 0
    svc.close()


def test_extra_notify_urls_get_everything_including_the_all_clear(tmp_path):
    clock = FakeClock()
    svc = AlertService(file_config(tmp_path, group_wait="0s"), tmp_path / "state", DISTRICTS,
                       CollectorRegistry(), clock=clock, extra_urls=[f"file://{tmp_path}/extra.jsonl"])
    a = svc.apply([level("west", 1, hazard="air", quantity="pm10")])[0].alert_id
    svc.apply([level("west", 0, hazard="air", quantity="pm10", t=T0 + S)])
    svc.deliver_pending()
    assert refs(read_file_channel(tmp_path, "extra")) == [f"Ref: {a}/1", f"Ref: {a}/2"]
    assert refs(read_file_channel(tmp_path, "umwelt")) == [f"Ref: {a}/1", f"Ref: {a}/2"]
    assert read_file_channel(tmp_path, "leitstelle") == []
    svc.close()


def test_records_views_and_health(tmp_path):
    clock = FakeClock()
    svc = make(tmp_path, clock)
    a = svc.apply([level("mitte", 1)])[0].alert_id
    svc.apply([level("mitte", 2, t=T0 + S)])
    assert [(r.seq, r.event) for r in svc.episode_records(a)] == [(1, "firing"), (2, "update")]
    [cur] = svc.active_records()
    assert (cur.alert_id, cur.seq, cur.level) == (a, 2, 2)
    assert svc.store_writable()[0] is True
    st = svc.outbox_status()
    assert st["ok"] and st["depth"] == 1  # the update flushed the waiting firing; the update itself waits
    clock.advance(31)
    svc.tick()
    assert svc.outbox_status()["depth"] == 2
    clock.advance(700)  # nobody sends: the outbox counts as stuck
    st = svc.outbox_status()
    assert not st["ok"] and st["channels"]["leitstelle"]["pending"] == 2
    assert st["channels"]["leitstelle"]["channel"] == "file://"
    svc.close()


def test_permanent_failure_and_expiry_do_not_block_the_queue(tmp_path):
    from alerting.config import ChannelConfig
    clock = FakeClock()
    cfg = file_config(tmp_path, group_wait="0s", max_retry_age="1h", channels=[
        ChannelConfig(name="leitstelle", url="bogus-scheme://nowhere", tags=["control-room"]),
        ChannelConfig(name="kats", url=f"file://{tmp_path}/missing-dir/kats.jsonl", tags=["kats"]),
    ])
    reg = CollectorRegistry()
    svc = AlertService(cfg, tmp_path / "state", DISTRICTS, reg, clock=clock)
    svc.apply([level("mitte", 3)])
    svc.apply([level("west", 3)])
    svc.deliver_pending()
    states = {(d["channel"], d["state"]) for d in svc.outbox()}
    assert states == {("leitstelle", "failed"), ("kats", "pending")}  # permanent vs retryable
    assert value(reg, "stadtwacht_notifications_total", channel="invalid://", outcome="failed") == 0
    assert value(reg, "stadtwacht_notifications_total", channel="bogus-scheme://", outcome="failed") == 2
    assert value(reg, "stadtwacht_notifications_total", channel="file://", outcome="retry") == 1
    clock.advance(3601)
    svc.deliver_pending()
    assert {d["state"] for d in svc.outbox() if d["channel"] == "kats"} == {"expired"}
    assert value(reg, "stadtwacht_outbox_depth") == 0
    svc.close()


def test_backoff_doubles_between_attempts(tmp_path):
    from alerting.outbox import RetryPolicy
    p = RetryPolicy(initial_ns=S, maximum_ns=10 * S)
    assert [p.delay_ns(n) // S for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_silence_cli(tmp_path, capsys):
    import argparse
    import json

    from alerting.cli import silence_command
    ns = dict(state_dir=tmp_path / "state", district=["mitte"], sensor=[], duration="2h", comment="<b>Bau</b>",
              operator="cli", id=None)
    make(tmp_path).close()  # the service's state directory
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="add", **ns)) == 0
    sid = json.loads(capsys.readouterr().out)["id"]
    import time
    svc = make(tmp_path, clock=time.time_ns)  # a service on the same state sees the CLI's silence (wall clock)
    svc.apply([level("mitte", 3)])
    assert svc.outbox() == [] and svc.active()[0]["silenced"]
    svc.close()
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="list", **ns)) == 0
    assert json.loads(capsys.readouterr().out)["comment"] == "Bau"
    ns["id"] = sid
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="remove", **ns)) == 0
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="remove", **ns)) == 1


def test_silence_cli_refuses_what_would_silence_other_than_meant(tmp_path, capsys):
    """A mistyped state directory (no service reads it) and a zero duration (it meant "forever") are errors;
    several districts and sensors go into one silence."""
    import argparse
    import json

    from alerting.cli import silence_command
    ns = dict(state_dir=tmp_path / "typo", district=["mitte", "nord"], sensor=["pegel-1"], duration="2h",
              comment="", operator="cli", id=None)
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="add", **ns)) == 2
    assert "no alert state in" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    make(tmp_path).close()
    ns["state_dir"] = tmp_path / "state"
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="add", **{**ns, "duration": "0s"})) == 2
    assert "must be positive" in capsys.readouterr().err
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="add", **ns)) == 0
    capsys.readouterr()
    forever = argparse.Namespace(action="add", **{**ns, "duration": "forever"})
    assert silence_command(file_config(tmp_path), forever) == 0
    assert json.loads(capsys.readouterr().out)["ends"] is None
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="list", **ns)) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(s["districts"], s["sensors"], s["ends"] is None) for s in listed] == [
        (["mitte", "nord"], ["pegel-1"], False), (["mitte", "nord"], ["pegel-1"], True)]


def test_silence_cli_shares_with_the_other_instances(tmp_path, capsys):
    """With several instances the command hands what it added or removed to the others; when that fails it
    says so (exit code 1) and the change holds in its state directory only."""
    import argparse
    import json

    from alerting.cli import silence_command
    shared: list = []
    ns = dict(state_dir=tmp_path / "state", district=["mitte"], sensor=[], duration="2h", comment="",
              operator="cli", id=None)
    make(tmp_path).close()  # the service's state directory
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="add", **ns),
                           lambda sid, s: shared.append((sid, s))) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shared"] is True and [(sid, s.districts) for sid, s in shared] == [(out["id"], ("mitte",))]
    ns["id"] = out["id"]
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="remove", **ns),
                           lambda sid, s: shared.append((sid, s))) == 0
    assert shared[-1] == (out["id"], None)
    assert json.loads(capsys.readouterr().out) == {"deleted": out["id"], "shared": True}

    def broken(sid, s):
        raise TimeoutError("no broker")

    ns["id"] = None
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="add", **ns), broken) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["shared"] is False and "no broker" in captured.err
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="list", **ns)) == 0
    assert json.loads(capsys.readouterr().out)["id"] == out["id"]  # held here all the same
    kept = out["id"]
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="add", **ns),
                           lambda sid, s: shared.append((sid, s))) == 0
    ns["id"] = removed = json.loads(capsys.readouterr().out)["id"]  # shared, then deleted with the broker away
    assert silence_command(file_config(tmp_path), argparse.Namespace(action="remove", **ns), broken) == 1
    assert json.loads(capsys.readouterr().out)["shared"] is False
    # the service on this state directory shares both once the broker takes them
    svc = make(tmp_path)
    assert [(sid, s and s.id) for sid, s in svc.unshared_silences({removed})] == [(kept, kept), (removed, None)]
    svc.close()


def test_started_notifier_delivers_and_stop_drains(tmp_path):
    import time
    svc = make(tmp_path, clock=time.time_ns, group_wait="0s")
    svc.start()
    recs = svc.apply([level("mitte", 3), level("west", 3)])
    svc.stop(5)  # returns once everything due is sent (or the deadline passed)
    want = [f"Ref: {r.alert_id}/1" for r in recs]
    assert sorted(refs(read_file_channel(tmp_path, "kats"))) == sorted(want)
    assert {d["state"] for d in svc.outbox()} == {"sent"}
    svc.close()


def test_console_channel(tmp_path, capsys):
    from alerting.channels import make_channel
    ch = make_channel("c", "console://", ("t",))
    assert ch.send("Titel", "Text\nRef: a/1", "warning").ok
    assert "== Titel\nText\nRef: a/1" in capsys.readouterr().out
    assert ch.label == "console://"
