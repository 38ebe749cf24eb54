"""Atom 1.0 feed of alerts: one entry per episode, linking its latest CAP message (the caller passes the active
alerts' records and, for a while, the last of those that ended, so a reader learns the end).

Follows the usual CAP-feed layout (an Atom entry per alert whose ``alternate``
link has type ``application/cap+xml``); entry ids are the CAP identifiers, so a
reader sees a new entry for each new event of an episode.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from lxml import etree

from alerting.cap import cap_filename, cap_identifier, headline, xml_text
from alerting.record import AlertRecord

__all__ = ["ATOM_NS", "CAP_MEDIA_TYPE", "atom_feed"]

ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_MEDIA_TYPE = "application/cap+xml"
_A = f"{{{ATOM_NS}}}"


def _atom_time(t: datetime) -> str:
    """RFC 3339 in whole seconds, UTC written as ``Z``."""
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    el = etree.SubElement(parent, _A + tag, {k: xml_text(v) for k, v in attrib.items()})
    if text is not None:
        el.text = xml_text(text)
    return el


def _latest_per_episode(records: Iterable[AlertRecord]) -> list[AlertRecord]:
    latest: dict[str, AlertRecord] = {}
    for r in records:
        if r.alert_id not in latest or r.seq > latest[r.alert_id].seq:
            latest[r.alert_id] = r
    return list(latest.values())


def atom_feed(
    active: Iterable[AlertRecord],
    *,
    base_url: str,
    updated: str | None = None,
    self_path: str = "/cap/atom.xml",
    title: str = "Stadtwacht Stuttgart – Warnungen (aktive und seit 24 h beendete)",
) -> bytes:
    """The feed document (UTF-8 with declaration), newest entry first.

    ``active`` may hold several events of an episode: its latest (highest seq)
    is the entry. ``updated`` (RFC 3339) defaults to the newest entry's time,
    or now for an empty feed. ``self_path`` is where the caller serves the feed.
    """
    base = base_url.rstrip("/")
    entries = sorted(
        ((datetime.fromisoformat(r.time), r) for r in _latest_per_episode(active)),
        key=lambda e: (e[0], e[1].alert_id),
        reverse=True,
    )
    if updated is not None:
        feed_updated = datetime.fromisoformat(updated)
    elif entries:
        feed_updated = entries[0][0]
    else:
        feed_updated = datetime.now(UTC)
    if feed_updated.tzinfo is None:
        raise ValueError(f"time without offset: {updated!r}")

    feed = etree.Element(_A + "feed", nsmap={None: ATOM_NS})
    _sub(feed, "id", base + self_path)
    _sub(feed, "title", title)
    _sub(feed, "updated", _atom_time(feed_updated))
    author = _sub(feed, "author")
    _sub(author, "name", "Stadtwacht Stuttgart")
    _sub(feed, "link", rel="self", type="application/atom+xml", href=base + self_path)
    for time, r in entries:
        entry = _sub(feed, "entry")
        _sub(entry, "id", cap_identifier(r.alert_id, r.seq))
        _sub(entry, "title", headline(r, "de"))
        _sub(entry, "updated", _atom_time(time))
        _sub(entry, "published", _atom_time(datetime.fromisoformat(r.started_at)))
        _sub(entry, "category", term=r.hazard)
        href = f"{base}/cap/{cap_filename(r.alert_id)}"
        _sub(entry, "link", rel="alternate", type=CAP_MEDIA_TYPE, href=href)
        summary = f"{headline(r, 'en')} (level {r.level}, {r.quantity}, event {r.seq}: {r.event})"
        _sub(entry, "summary", summary, type="text")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(
        feed, encoding="UTF-8", pretty_print=True
    )
