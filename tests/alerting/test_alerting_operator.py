"""What a control-room operator relies on: acknowledgement per level, escalation timers, updates to everyone
warned, silences with a level cap that end with what they held back, and state from an older version."""

from __future__ import annotations

import argparse
import json
import sqlite3

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from alerting.api import AlertApi
from alerting.channels import SendOutcome
from alerting.config import AlertingConfig, RouteConfig
from alerting.service import AlertService
from alerting.store import Silence
from geodata.levels import DistrictLevel
from tests.alerting.alerting_helpers import T0, FakeClock

M = 60 * 10**9
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMES = {0: "normal", 1: "Meldebeginn", 2: "Vorwarnung", 3: "Krisenstab", 4: "Hochwasseralarm"}


class Inbox:
    """An in-memory channel: what it was sent, as (title, body)."""

    def __init__(self, name: str) -> None:
        self.name = self.label = name
        self.tags = (name,)
        self.got: list[tuple[str, str]] = []
        self.types: list[str] = []  # notify type of each message ("success": green, an all-clear)

    def send(self, title: str, body: str, notify_type: str) -> SendOutcome:
        self.got.append((title, body))
        self.types.append(notify_type)
        return SendOutcome(True)

    def take(self) -> list[str]:
        """The titles received since the last take, the message kind first ("WARNUNG", "ESKALATION", ...)."""
        out = [t for t, _ in self.got]
        self.got.clear()
        return out


def flood(lv: int, minute: float, value: float | None = None) -> DistrictLevel:
    return DistrictLevel(district="bad-cannstatt", district_name="Bad Cannstatt", hazard="flood",
                         quantity="water_level", rule="neckar", level=lv, level_name=NAMES[lv],
                         value=300.0 + 50 * lv if value is None else value, threshold=300.0 + 50 * lv - 5,
                         sensors=("pegel-stuttgart",) if lv else (), time_ns=T0 + int(minute * M))


class Desk:
    """An AlertService with a duty and a chief inbox on a fake clock, driven minute by minute."""

    def __init__(self, tmp_path, routes: list[RouteConfig], clock: FakeClock | None = None) -> None:
        self.tmp_path, self.routes = tmp_path, routes
        self.clock = clock or FakeClock()
        self.inbox = {"duty": Inbox("duty"), "chief": Inbox("chief")}
        cfg = AlertingConfig(group_wait="0s", group_rules=[], routes=routes, repeat_interval="4h")
        self.svc = AlertService(cfg, tmp_path / "state", {"bad-cannstatt": "Bad Cannstatt"}, CollectorRegistry(),
                                clock=self.clock, channels=self.inbox)
        self.api = AlertApi(self.svc, TOKEN)

    def at(self, minute: float) -> Desk:
        self.clock.now = T0 + int(minute * M)
        return self

    def level(self, lv: int, minute: float, value: float | None = None) -> None:
        self.at(minute).svc.apply([flood(lv, minute, value)])
        self.svc.deliver_pending()

    def tick(self, minute: float) -> None:
        self.at(minute).svc.tick()
        self.svc.deliver_pending()

    def heard(self, who: str) -> list[str]:
        self.svc.deliver_pending()
        return [t.split(":")[0] + ": " + t.split(" – ")[1] for t in self.inbox[who].take()]

    def alert(self) -> dict:
        status, _, body = self.api.handle("GET", "/api/alerts", AUTH, b"")
        assert status == 200
        [a] = json.loads(body)["alerts"]
        return a

    def restart(self) -> None:
        self.svc.close()
        self.__init__(self.tmp_path, self.routes, self.clock)

    def close(self) -> None:
        self.svc.close()


# ---------------------------------------------------------------- 1. acknowledgement per level
def test_a_rise_in_level_clears_the_acknowledgement_and_a_fall_keeps_it(tmp_path):
    """Acknowledged at Meldebeginn, risen to Hochwasseralarm: not acknowledged any more (API, escalation,
    reminders), also after a restart; acknowledged again, a fall keeps it."""
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, max_level=2, tags=["duty"]),
                        RouteConfig(hazard="flood", min_level=3, tags=["duty"], escalate_after="15m",
                                    escalate_tags=["chief"])])
    d.level(1, 0)
    assert d.heard("duty") == ["WARNUNG: Meldebeginn"]
    d.at(5).svc.ack(d.alert()["alert_id"], "Müller")
    assert d.alert()["acked_by"] == "Müller"
    d.level(4, 60)
    assert d.heard("duty") == ["AKTUALISIERUNG: Hochwasseralarm"]
    a = d.alert()
    assert (a["level"], a["acked_by"], a["acked_at"]) == (4, None, None)
    d.restart()  # the cleared acknowledgement is what is stored
    assert d.alert()["acked_by"] is None
    d.tick(74)
    assert d.heard("chief") == []
    d.tick(75)  # 15 min after the level-3 route matched
    assert d.heard("chief") == ["ESKALATION (unbestätigt): Hochwasseralarm"]
    d.tick(60 + 4 * 60)  # 4 h after the last notification: a reminder, not acknowledged
    assert d.heard("duty") == ["ERINNERUNG (unbestätigt): Hochwasseralarm"]
    d.at(310).svc.ack(d.alert()["alert_id"], "Schmidt")
    d.level(3, 320)  # a fall keeps the acknowledgement
    assert d.alert()["acked_by"] == "Schmidt"
    d.restart()
    assert d.alert()["acked_by"] == "Schmidt"
    d.tick(320 + 10 * 60)
    assert d.heard("duty") == [] and d.heard("chief") == []  # acknowledged: no reminders
    d.close()


# ---------------------------------------------------------------- 2. escalation timer
def test_escalation_counts_from_when_its_route_matched_not_from_the_first_warning(tmp_path):
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, max_level=2, tags=["duty"]),
                        RouteConfig(hazard="flood", min_level=3, tags=["duty"], escalate_after="15m",
                                    escalate_tags=["chief"])])
    d.level(1, 0)
    d.level(3, 120)
    d.tick(121)
    d.tick(134)
    assert d.heard("chief") == []
    d.restart()  # when the route matched is stored with the episode
    d.tick(135)
    assert d.heard("chief") == ["ESKALATION (unbestätigt): Krisenstab"]
    d.tick(150)
    assert d.heard("chief") == []  # once
    d.close()


def test_an_acknowledgement_stops_escalation_and_a_rise_that_clears_it_restarts_the_timer(tmp_path):
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, tags=["duty"], escalate_after="10m",
                                    escalate_tags=["chief"])])
    d.level(1, 0)
    d.at(2).svc.ack(d.alert()["alert_id"], "Müller")
    d.tick(30)
    assert d.heard("chief") == []  # acknowledged: no escalation
    d.level(2, 60)  # the rise clears the acknowledgement: 10 more minutes to acknowledge the new level
    d.tick(61)
    assert d.heard("chief") == []
    d.tick(70)
    assert d.heard("chief") == ["ESKALATION (unbestätigt): Vorwarnung"]
    d.close()


def test_an_escalation_already_sent_goes_out_again_for_a_new_level_left_unacknowledged(tmp_path):
    """Escalated at Meldebeginn, then acknowledged, then risen to Hochwasseralarm: the new level needs its own
    acknowledgement, so after escalate_after without one the chief is told again (once); a fall keeps the
    acknowledgement and starts nothing over."""
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, tags=["duty"], escalate_after="10m",
                                    escalate_tags=["chief"])])
    d.level(1, 0)
    d.tick(10)
    assert d.heard("chief") == ["ESKALATION (unbestätigt): Meldebeginn"]
    d.at(12).svc.ack(d.alert()["alert_id"], "Müller")
    d.level(4, 60)
    assert d.heard("chief") == ["AKTUALISIERUNG: Hochwasseralarm"]  # warned of the rise, as everyone warned
    d.tick(65)
    assert d.heard("chief") == []
    d.tick(70)
    assert d.heard("chief") == ["ESKALATION (unbestätigt): Hochwasseralarm"]
    d.tick(90)
    assert d.heard("chief") == []  # once per level
    d.at(91).svc.ack(d.alert()["alert_id"], "Müller")
    d.level(3, 100)
    d.tick(130)
    assert d.heard("chief") == ["AKTUALISIERUNG: Krisenstab"]
    d.close()


# ---------------------------------------------------------------- 3. updates to everyone warned
def test_the_first_message_a_recipient_gets_is_a_warning_not_an_update(tmp_path):
    """Meldebeginn matched no route: the crisis team first hears of the episode at Krisenstab, as a WARNUNG
    (an AKTUALISIERUNG would send them looking for a first message that never came); later changes are updates."""
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=3, tags=["duty"])])
    d.level(1, 0)
    d.level(3, 30)
    d.level(4, 60)
    assert d.heard("duty") == ["WARNUNG: Krisenstab", "AKTUALISIERUNG: Hochwasseralarm"]
    assert [r.event for r in d.svc.history()][::-1] == ["firing", "update", "update"]  # the record is unchanged
    d.close()


def test_those_warned_hear_the_level_fall_even_where_the_lower_level_matches_no_route(tmp_path):
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=3, tags=["duty"])])
    d.level(3, 0)
    d.level(1, 60)
    d.level(0, 120)
    assert d.heard("duty") == ["WARNUNG: Krisenstab", "AKTUALISIERUNG: Meldebeginn", "ENTWARNUNG: normal"]
    d.close()


def test_an_update_goes_to_those_warned_and_to_the_routes_of_the_new_level(tmp_path):
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, max_level=2, tags=["duty"]),
                        RouteConfig(hazard="flood", min_level=3, tags=["chief"])])
    d.level(1, 0)
    d.level(3, 10)
    d.level(2, 20)
    assert d.heard("duty") == ["WARNUNG: Meldebeginn", "AKTUALISIERUNG: Krisenstab", "AKTUALISIERUNG: Vorwarnung"]
    assert d.heard("chief") == ["AKTUALISIERUNG: Krisenstab", "AKTUALISIERUNG: Vorwarnung"]
    d.close()


# ---------------------------------------------------------------- 4. silences
def silence_from_page(d: Desk, minute: float, max_level: int | None, duration: str = "2h") -> dict:
    body = {"districts": ["bad-cannstatt"], "hazard": "flood", "duration": duration, "created_by": "Müller"}
    if max_level is not None:
        body["max_level"] = max_level
    status, _, out = d.at(minute).api.handle("POST", "/api/silences", AUTH, json.dumps(body).encode())
    assert status == 201, out
    return json.loads(out)["silence"]


def test_a_rise_above_the_silenced_level_breaks_through(tmp_path):
    """The page silences the row's level; Hochwasseralarm is sent at once, and the fall back under the silence
    goes to those who heard it."""
    d = Desk(tmp_path, [])
    d.level(1, 0)
    sil = silence_from_page(d, 5, max_level=1)
    assert sil["max_level"] == 1 and sil["active"] is True
    assert d.alert()["silenced"] is True
    d.level(2, 20, value=340)  # wait: level 2 is above the cap too
    assert d.heard("duty") == ["WARNUNG: Meldebeginn", "AKTUALISIERUNG: Vorwarnung"]
    d.level(4, 30)
    assert d.heard("duty") == ["AKTUALISIERUNG: Hochwasseralarm"]
    assert d.alert()["silenced"] is False
    d.level(1, 60)  # eased into the silence from a level it does not cover: those warned hear it
    assert d.heard("duty") == ["AKTUALISIERUNG: Meldebeginn"]
    assert d.alert()["silenced"] is True
    for m in (125, 130, 200):  # the silence ended: nothing held back, nothing to repeat
        d.tick(m)
    assert d.heard("duty") == []
    d.tick(60 + 4 * 60)
    assert d.heard("duty") == ["ERINNERUNG (unbestätigt): Meldebeginn"]
    d.close()


def test_a_configured_silence_may_stop_at_a_level(tmp_path):
    """A maintenance window in the configuration with ``max_level = 1``: Meldebeginn is held back, a rise to
    Hochwasseralarm breaks through at once."""
    from alerting.config import SilenceConfig
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, tags=["duty"])])
    d.svc.close()
    cfg = AlertingConfig(group_wait="0s", group_rules=[], routes=d.routes, repeat_interval="4h",
                         silences=[SilenceConfig(id="pegelwartung", hazard="flood", max_level=1)])
    d.svc = AlertService(cfg, tmp_path / "state", {"bad-cannstatt": "Bad Cannstatt"}, CollectorRegistry(),
                         clock=d.clock, channels=d.inbox)
    d.api = AlertApi(d.svc, TOKEN)
    d.level(1, 0)
    assert d.heard("duty") == [] and d.alert()["silenced"] is True
    d.level(4, 10)
    assert d.heard("duty") == ["WARNUNG: Hochwasseralarm"]
    assert d.svc.silences()[0]["max_level"] == 1
    d.close()


def test_what_a_silence_held_back_goes_out_once_when_it_expires(tmp_path):
    """A silence without a level cap (the old page, the CLI): the rise is held; the current state goes out when
    the silence ends, once, not only at the next reminder."""
    d = Desk(tmp_path, [])
    d.level(1, 0)
    silence_from_page(d, 5, max_level=None)
    d.level(4, 30)
    for m in (60, 124):
        d.tick(m)
    assert d.heard("duty") == ["WARNUNG: Meldebeginn"]
    d.restart()  # what was held back is stored
    d.tick(125)
    sent = d.inbox["duty"].got[:]
    assert d.heard("duty") == ["AKTUALISIERUNG: Hochwasseralarm"]
    assert "Tendenz: steigend" in sent[0][1]  # against what they last heard: Meldebeginn
    for m in (126, 180, 364):
        d.tick(m)
    assert d.heard("duty") == []  # once; the reminder counts from then
    d.tick(365)
    assert d.heard("duty") == ["ERINNERUNG (unbestätigt): Hochwasseralarm"]
    d.close()


def test_what_a_silence_held_back_goes_out_when_it_is_deleted(tmp_path):
    d = Desk(tmp_path, [])
    sil = silence_from_page(d, 0, max_level=None, duration="")
    d.level(3, 1)  # fired under the silence: nobody heard of it
    d.level(2, 2)
    d.tick(30)
    assert d.heard("duty") == []
    status, _, _ = d.at(40).api.handle("DELETE", f"/api/silences/{sil['id']}", AUTH, b"")
    assert status == 200
    assert d.heard("duty") == ["WARNUNG: Vorwarnung"]  # the current state, as the first warning
    d.tick(41)
    assert d.heard("duty") == []
    d.close()


def test_a_change_undone_under_the_silence_is_not_repeated(tmp_path):
    d = Desk(tmp_path, [])
    d.level(1, 0)
    silence_from_page(d, 5, max_level=None, duration="1h")
    d.level(2, 10)
    d.level(1, 20)
    d.tick(65)
    assert d.heard("duty") == ["WARNUNG: Meldebeginn"]  # they know level 1 already
    d.close()


def test_silence_api_validates_max_level_and_lists_state(tmp_path):
    d = Desk(tmp_path, [])
    bad = json.dumps({"districts": ["bad-cannstatt"], "max_level": 0}).encode()
    assert d.api.handle("POST", "/api/silences", AUTH, bad)[0] == 400
    silence_from_page(d, 0, max_level=2, duration="1h")
    d.at(61)
    [listed] = json.loads(d.api.handle("GET", "/api/silences", AUTH, b"")[2])["silences"]
    assert listed["max_level"] == 2 and listed["active"] is False  # ended: listed, no longer in force
    d.close()


def test_silence_cli_max_level(tmp_path, capsys):
    from alerting.cli import silence_command
    from stadtwacht.cli import _parser
    d = Desk(tmp_path, [])
    d.close()
    args = _parser().parse_args(["silence", "--state-dir", str(tmp_path / "state"), "add", "--district",
                                 "bad-cannstatt", "--max-level", "2"])
    cfg = AlertingConfig()
    assert silence_command(cfg, args) == 0
    capsys.readouterr()
    assert silence_command(cfg, argparse.Namespace(**{**vars(args), "action": "list"})) == 0
    assert json.loads(capsys.readouterr().out)["max_level"] == 2
    assert silence_command(cfg, argparse.Namespace(**{**vars(args), "max_level": 0})) == 2
    legacy = {k: v for k, v in vars(args).items() if k != "max_level"}  # a caller that predates --max-level
    assert silence_command(cfg, argparse.Namespace(**legacy)) == 0


def test_max_level_round_trips_through_the_district_topic_and_old_records_decode():
    from stadtwacht import city_view
    s = Silence(id="s1", districts=("mitte",), sensors=(), hazard="flood", starts_ns=1, ends_ns=2, comment="",
                created_by="x", source="api", max_level=2)
    assert city_view._decode_silence(city_view._encode(s)) == s
    old = msgspec.msgpack.encode({k: v for k, v in msgspec.to_builtins(s).items() if k != "max_level"})
    assert city_view._decode_silence(old).max_level is None


# ---------------------------------------------------------------- stored state of the previous version
def test_state_written_by_the_previous_version_still_opens(tmp_path):
    """Episodes and silences stored without the fields added since (route_since, held, notified_level,
    max_level) load: escalation then counts from the episode's start, as it did, and the silence covers every
    level."""
    routes = [RouteConfig(hazard="flood", min_level=1, tags=["duty"], escalate_after="15m", escalate_tags=["chief"])]
    d = Desk(tmp_path, routes)
    d.level(1, 0)
    assert d.heard("duty") == ["WARNUNG: Meldebeginn"]
    silence_from_page(d, 1, max_level=None, duration="10m")
    d.close()
    db = sqlite3.connect(tmp_path / "state" / "alerts.sqlite3")
    for table, gone in (("episodes", ("route_since", "held", "notified_level")), ("silences", ("max_level",))):
        for key, data in db.execute(f"SELECT rowid, data FROM {table}").fetchall():
            doc = json.loads(data)
            assert all(g in doc for g in gone)
            db.execute(f"UPDATE {table} SET data=? WHERE rowid=?",
                       (json.dumps({k: v for k, v in doc.items() if k not in gone}).encode(), key))
    db.commit()
    db.close()
    d = Desk(tmp_path, routes, d.clock)
    assert d.alert()["silenced"] is True
    d.level(4, 2)  # held by the old silence (every level)
    assert d.heard("duty") == []
    d.tick(11)  # silence over: the held state; the escalation counts from the start (old state lacks the time)
    assert d.heard("duty") == ["AKTUALISIERUNG: Hochwasseralarm"]
    assert d.heard("chief") == []
    d.tick(15)
    assert d.heard("chief") == ["ESKALATION (unbestätigt): Hochwasseralarm"]
    d.close()


@pytest.mark.parametrize("lv", [1, 2])
def test_the_silenced_flag_follows_the_cap(tmp_path, lv):
    d = Desk(tmp_path, [])
    d.level(lv, 0)
    d.at(1).svc.silence(districts=["bad-cannstatt"], hazard="flood", max_level=1)
    assert d.alert()["silenced"] is (lv <= 1)
    d.close()


def test_an_acknowledgement_of_a_level_that_has_risen_since_is_refused(tmp_path):
    """The page sends the level it showed: acknowledging Meldebeginn while the episode is at Hochwasseralarm
    would cover a level nobody saw (409); the level shown or a higher one is fine, and without a level as before."""
    d = Desk(tmp_path, [])
    d.level(1, 0)
    d.level(4, 5)
    aid = d.alert()["alert_id"]
    status, _, out = d.at(6).api.handle("POST", f"/api/alerts/{aid}/ack", AUTH,
                                        json.dumps({"operator": "Müller", "level": 1}).encode())
    assert status == 409 and json.loads(out)["level"] == 4
    assert d.alert()["acked_by"] is None
    status, _, out = d.api.handle("POST", f"/api/alerts/{aid}/ack", AUTH,
                                  json.dumps({"operator": "Müller", "level": 4}).encode())
    assert status == 200 and json.loads(out)["alert"]["acked_by"] == "Müller"
    assert d.api.handle("POST", f"/api/alerts/{aid}/ack", AUTH, b'{"operator": "Schmidt"}')[0] == 200
    d.close()


def test_messages_after_an_acknowledgement_say_who_took_it(tmp_path):
    """Colleagues on other channels learn who took the alert: the update of a fall and the all-clear name the
    operator and the time (Europe/Berlin)."""
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, tags=["duty"])])
    d.level(2, 0)
    d.at(5).svc.ack(d.alert()["alert_id"], "Müller")
    d.level(1, 30)
    d.level(0, 60)
    bodies = [b for _, b in d.inbox["duty"].got]
    assert len(bodies) == 3
    assert "quittiert" not in bodies[0]
    assert all("quittiert von Müller um " in b for b in bodies[1:]), bodies
    d.close()


def test_an_episode_ended_by_a_faulty_sensor_is_stored_and_read_back(tmp_path):
    """Its threshold is NaN (JSON null in the store): reading the episode back failed, and with it the messages
    that look it up."""
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, tags=["duty"])])
    d.level(4, 0)
    alert_id = d.alert()["alert_id"]
    d.at(10).svc.apply([DistrictLevel(district="bad-cannstatt", district_name="Bad Cannstatt", hazard="flood",
                                      quantity="water_level", rule="neckar", level=0, level_name="normal",
                                      value=512.0, threshold=float("nan"), sensors=(), time_ns=T0 + 10 * M)])
    d.svc.deliver_pending()
    ep = d.svc.episode(alert_id)
    assert ep is not None and ep.level == 0 and ep.value == 512.0 and ep.threshold != ep.threshold
    titles = d.inbox["duty"].take()
    assert titles[-1].startswith("MESSAUSFALL"), titles
    d.close()


def test_a_lost_measurement_and_an_all_clear_are_never_one_message(tmp_path):
    """Two districts end together, one for want of a reading, one below its clear value: two messages, the
    all-clear green ("success"), the loss of measurement not."""
    d = Desk(tmp_path, [RouteConfig(hazard="flood", min_level=1, tags=["duty"])])
    d.svc.districts["ost"] = "Ost"
    ost = DistrictLevel(district="ost", district_name="Ost", hazard="flood", quantity="water_level", rule="neckar",
                        level=2, level_name=NAMES[2], value=410.0, threshold=400.0, sensors=("pegel-x",),
                        time_ns=T0)
    d.at(0).svc.apply([flood(2, 0), ost])
    d.svc.deliver_pending()
    d.inbox["duty"].take()
    lost = DistrictLevel(district="bad-cannstatt", district_name="Bad Cannstatt", hazard="flood",
                         quantity="water_level", rule="neckar", level=0, level_name="normal", value=512.0,
                         threshold=float("nan"), sensors=(), time_ns=T0 + 10 * M)
    cleared = DistrictLevel(district="ost", district_name="Ost", hazard="flood", quantity="water_level",
                            rule="neckar", level=0, level_name="normal", value=390.0, threshold=395.0, sensors=(),
                            time_ns=T0 + 10 * M)
    d.at(10).svc.apply([lost, cleared])
    d.svc.deliver_pending()
    got = sorted((t.split(":")[0], kind) for t, kind in zip(d.inbox["duty"].take(), d.inbox["duty"].types[-2:],
                                                             strict=True))
    assert got == [("ENTWARNUNG", "success"), ("MESSAUSFALL", "failure")], got
    d.close()
