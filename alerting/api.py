"""Framework-free HTTP handlers for acknowledgement, alert lists and silences (bearer-token protected)."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import msgspec

from alerting.errors import AckOutdatedError, UnknownAlertError
from alerting.record import AlertRecord
from alerting.service import AlertService
from stadtwacht.durations import parse_duration

__all__ = ["MAX_BODY", "AlertApi"]

MAX_BODY = 64 * 1024

_ACK = re.compile(r"^/api/alerts/([A-Za-z0-9_.-]{1,80})/ack$")
_SILENCE = re.compile(r"^/api/silences/([A-Za-z0-9_.-]{1,80})$")

Response = tuple[int, dict[str, str], bytes]


class _AckBody(msgspec.Struct, forbid_unknown_fields=True):
    operator: str
    level: int | None = None  # the level the operator saw (the page sends it): refused (409) when it rose since


class _SilenceBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    districts: list[str] = []
    sensors: list[str] = []
    hazard: str = ""
    duration: str = ""  # e.g. "2h"; empty = until removed
    comment: str = ""
    created_by: str = ""
    max_level: int | None = None  # the highest level it covers (the page: the row's level); None = every level


def _json(status: int, obj: Any) -> Response:
    body = json.dumps(obj, ensure_ascii=False, default=str).encode()
    return status, {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"}, body


def _outdated(exc: AckOutdatedError) -> Response:
    return _json(409, {"error": str(exc.args[0]), "level": exc.level})


def _record(r: AlertRecord) -> dict[str, Any]:
    return msgspec.to_builtins(r)


class AlertApi:
    """Routes `/api/alerts...` and `/api/silences...`; the lead's HTTP server passes requests through."""

    def __init__(self, service: AlertService, token: str, *, lock: AbstractContextManager | None = None,
                 on_change: Callable[[], None] | None = None, remote: Callable[[], list[dict]] = list,
                 forward_ack: Callable[[str, str, int | None], Any] | None = None,
                 share_silence: Callable[[str], bool | None] | None = None,
                 history: Callable[[int], list[AlertRecord]] | None = None) -> None:
        """``remote``: the active alerts other instances decide (listed, marked ``remote``); ``forward_ack``:
        sends an acknowledgement (alert id, operator, level seen or None) of an alert not decided here to its
        owner (falsy when it knows none; raises ``AckOutdatedError`` when it knows the level rose since);
        ``share_silence``: hands a silence created or deleted here to the other instances (None: there are
        none); ``history``: the latest events, newest first (default: the service's own)."""
        # An empty token is allowed (the lead logs a warning): every request then answers 401.
        self._service = service
        self._token = token.encode()
        self._lock = lock if lock is not None else nullcontext()
        self._on_change = on_change
        self._remote = remote
        self._forward_ack = forward_ack
        self._share_silence = share_silence
        self._history = history if history is not None else service.history

    def _authorized(self, headers: dict[str, str]) -> bool:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, given = value.partition(" ")
        # compare_digest on equal-length digests would hide the length too; the token length is not secret.
        return (bool(self._token) and scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), self._token))

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        """One request -> (status, headers, JSON body); never raises for client errors."""
        path, _, query = path.partition("?")
        if not self._authorized(headers):
            status, h, b = _json(401, {"error": "unauthorized"})
            return status, {**h, "WWW-Authenticate": 'Bearer realm="stadtwacht"'}, b
        if len(body) > MAX_BODY:
            return _json(413, {"error": f"request body larger than {MAX_BODY} bytes"})
        try:
            with self._lock:
                status, h, b = self._route(method.upper(), path, query, body)
            if self._on_change is not None and method.upper() in ("POST", "DELETE") and status < 300:
                self._on_change()
            if self._share_silence is not None and status < 300 and (
                    (path == "/api/silences" and method.upper() == "POST")
                    or (_SILENCE.match(path) and method.upper() == "DELETE")):
                return self._shared(status, b)
            return status, h, b
        except msgspec.ValidationError as exc:
            return _json(400, {"error": f"invalid request: {exc}"})
        except msgspec.DecodeError:
            return _json(400, {"error": "invalid JSON"})
        except AckOutdatedError as exc:  # an acknowledgement covers the level acknowledged and lower ones
            return _outdated(exc)
        except UnknownAlertError as exc:
            forwarded = self._forwarded(path, body)
            if forwarded is not None:
                return forwarded
            return _json(404, {"error": f"unknown id {exc.ident!r}"})

    def _forwarded(self, path: str, body: bytes) -> Response | None:
        """An acknowledgement of an alert another instance decides, sent on to it (202), outside the lock."""
        m = _ACK.match(path)
        if m is None or self._forward_ack is None:
            return None
        ack = msgspec.json.decode(body, type=_AckBody)  # validated before the lookup failed
        operator = ack.operator
        try:
            sent = self._forward_ack(m.group(1), operator, ack.level)
        except AckOutdatedError as exc:
            return _outdated(exc)
        except Exception as exc:  # the broker: the operator must know the acknowledgement did not go out
            return _json(503, {"error": f"could not forward the acknowledgement: {type(exc).__name__}"})
        if not sent:
            return None
        return _json(202, {"forwarded": m.group(1), "operator": operator,
                           "note": "sent to the instance that decides this alert's district"})

    def _shared(self, status: int, body: bytes) -> Response:
        """The answer to a silence created or deleted here, once handed to the other instances (outside the
        lock); it says whether that worked."""
        doc = json.loads(body)
        silence_id = doc["silence"]["id"] if "silence" in doc else doc["deleted"]
        try:
            shared = self._share_silence(silence_id)
        except Exception as exc:  # the broker: the operator must know the other instances did not get it
            if "deleted" in doc:
                self._service.silence_deletion_unshared(silence_id)
            doc.update(shared=False, warning=f"done on this instance only: sharing it with the other instances "
                                             f"failed ({type(exc).__name__}); this instance shares it once the "
                                             f"broker takes it")
            return _json(status, doc)
        if shared is not None:
            doc["shared"] = shared
        return _json(status, doc)

    def _route(self, method: str, path: str, query: str, body: bytes) -> Response:
        if path == "/api/alerts":
            if method != "GET":
                return _json(405, {"error": "method not allowed"})
            return _json(200, {"alerts": self._service.active() + self._remote()})
        if path == "/api/alerts/history":
            if method != "GET":
                return _json(405, {"error": "method not allowed"})
            limit = 100
            for part in query.split("&"):
                k, _, v = part.partition("=")
                if k == "limit" and v.isdigit():
                    limit = min(int(v), 1000)
            return _json(200, {"events": [_record(r) for r in self._history(limit)]})
        m = _ACK.match(path)
        if m:
            if method != "POST":
                return _json(405, {"error": "method not allowed"})
            ack = msgspec.json.decode(body, type=_AckBody)
            if not ack.operator.strip():
                return _json(400, {"error": "operator is required"})
            return _json(200, {"alert": self._service.ack(m.group(1), ack.operator, ack.level)})
        if path == "/api/silences":
            if method == "GET":
                return _json(200, {"silences": self._service.silences()})
            if method == "POST":
                s = msgspec.json.decode(body, type=_SilenceBody)
                if s.hazard not in ("", "flood", "air", "sensor"):
                    return _json(400, {"error": "unknown hazard"})
                if not (s.districts or s.sensors):  # it would match every alert of the city
                    return _json(400, {"error": "give districts or sensors: a city-wide silence is refused"})
                unknown = sorted(set(s.districts) - self._service.districts.keys())
                if unknown:
                    return _json(400, {"error": f"unknown district(s): {', '.join(unknown)}"})
                if s.max_level is not None and s.max_level < 1:
                    return _json(400, {"error": "max_level must be at least 1 (leave it out: every level)"})
                ends = 0
                if s.duration:
                    try:
                        duration = parse_duration(s.duration)
                    except ValueError as exc:
                        return _json(400, {"error": str(exc)})
                    if duration <= 0:
                        return _json(400, {"error": "duration must be positive (leave it out: until removed)"})
                    ends = self._service.now_ns() + duration
                sil = self._service.silence(districts=s.districts, sensors=s.sensors, hazard=s.hazard,
                                            ends_ns=ends, comment=s.comment, created_by=s.created_by,
                                            max_level=s.max_level)
                return _json(201, {"silence": sil})
            return _json(405, {"error": "method not allowed"})
        m = _SILENCE.match(path)
        if m:
            if method != "DELETE":
                return _json(405, {"error": "method not allowed"})
            if not self._service.unsilence(m.group(1)):
                raise UnknownAlertError(m.group(1))
            return _json(200, {"deleted": m.group(1)})
        return _json(404, {"error": "not found"})
