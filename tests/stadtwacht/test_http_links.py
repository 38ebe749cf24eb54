"""Links the HTTP port hands out: the CAP feed's entries must point where its reader can follow them.

In a container the server listens on 0.0.0.0; a feed built from the bind address linked every CAP message to
http://0.0.0.0:9108/... Without ``[alerting] public_url`` the links follow the address the reader asked for.
"""

from __future__ import annotations

import http.client
import threading

import pytest
from lxml import etree
from prometheus_client import CollectorRegistry

from alerting.atom import ATOM_NS
from alerting.record import AlertRecord
from stadtwacht.http import HttpServer, StateFeed, _local_url

ACTIVE = [AlertRecord(alert_id="flood-a", seq=1, event="firing", hazard="flood", quantity="water_level", level=1,
                      level_name="Meldebeginn", districts=["mitte"], district_names=["Mitte"], sensors=["pegel-1"],
                      value=350.0, threshold=300.0, rule="gauge", started_at="2026-03-08T09:00:00+01:00",
                      time="2026-03-08T09:00:00+01:00")]


@pytest.fixture
def serve(tmp_path):
    servers: list[HttpServer] = []

    def start(public_url: str = "") -> HttpServer:
        srv = HttpServer("127.0.0.1", 0, CollectorRegistry(), None, StateFeed(dict, threading.RLock()),
                         lambda: (True, {}), tmp_path, lambda: ACTIVE, 65536, public_url).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def _feed_links(srv: HttpServer, host: str | None = None) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.putrequest("GET", "/cap/atom.xml", skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 200
        root = etree.fromstring(resp.read())
    finally:
        conn.close()
    return root.xpath("//a:link/@href", namespaces={"a": ATOM_NS})


def test_without_a_public_url_the_links_follow_the_address_asked_for(serve) -> None:
    srv = serve()
    assert _feed_links(srv, "stadtwacht.leitstelle.svc:9108") == [
        "http://stadtwacht.leitstelle.svc:9108/cap/atom.xml", "http://stadtwacht.leitstelle.svc:9108/cap/flood-a.xml"]
    assert _feed_links(srv, "[::1]:8080")[0] == "http://[::1]:8080/cap/atom.xml"
    assert _feed_links(srv)[0] == f"http://127.0.0.1:{srv.port}/cap/atom.xml"


@pytest.mark.parametrize("host", ['evil.example/"><script>', "a b", "", "host:port", "x" * 300 + ":99999999"])
def test_an_unfit_host_header_falls_back_to_the_local_address(serve, host: str) -> None:
    srv = serve()
    assert _feed_links(srv, host)[0] == f"http://127.0.0.1:{srv.port}/cap/atom.xml"


def test_a_configured_public_url_wins(serve) -> None:
    srv = serve("https://warnung.stuttgart.example/stadtwacht")
    assert _feed_links(srv, "10.0.0.7:9108") == ["https://warnung.stuttgart.example/stadtwacht/cap/atom.xml",
                                                 "https://warnung.stuttgart.example/stadtwacht/cap/flood-a.xml"]


def test_a_server_on_all_interfaces_is_shown_at_the_loopback() -> None:
    assert _local_url("0.0.0.0", 9108) == "http://127.0.0.1:9108"
    assert _local_url("", 9108) == "http://127.0.0.1:9108"
    assert _local_url("192.0.2.10", 80) == "http://192.0.2.10:80"
