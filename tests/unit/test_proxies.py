"""Whose X-Forwarded-For the services believe: the proxy's (looked up by name, again as it
moves), never a stranger's, and never the entries a client wrote itself."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from hubforge import proxies
from hubforge.contract import PROXY_PEERS_ENV
from hubforge.hub.governance.auth import HubAuthHandler
from hubforge.hub.mlflow.audit import Watch
from hubforge.proxies import ProxyPeers, client_address


class Dns:
    """A resolver whose answers the test changes; counts lookups."""

    def __init__(self, answers: dict[str, set[str]]) -> None:
        self.answers, self.lookups = answers, 0

    def __call__(self, name: str) -> Iterable[str]:
        self.lookups += 1
        if name not in self.answers:
            raise OSError(f"{name}: no such host")
        return self.answers[name]


def test_the_right_most_entry_is_the_client_and_the_rest_is_what_the_client_wrote() -> None:
    assert client_address("10.0.0.2", "198.51.100.1, 203.0.113.7") == "203.0.113.7"
    assert client_address("10.0.0.2", "203.0.113.7") == "203.0.113.7"
    assert client_address("10.0.0.2", "[2001:db8::1]") == "2001:db8::1"
    for unusable in (None, "", "unknown", "198.51.100.1, not-an-address", "203.0.113.7,"):
        assert client_address("10.0.0.2", unusable) == "10.0.0.2", unusable


def test_only_the_proxy_is_believed() -> None:
    peers = ProxyPeers(["hubforge-proxy"], resolver=Dns({"hubforge-proxy": {"10.0.0.2"}}))
    assert peers.client_address("10.0.0.2", "198.51.100.1, 203.0.113.7") == "203.0.113.7"
    # A user's pod that reaches the service's port itself writes what it likes: not believed.
    assert peers.client_address("10.0.0.9", "203.0.113.7") == "10.0.0.9"
    assert peers.client_address(None, "203.0.113.7") is None


def test_the_proxy_that_moved_is_found_again_and_a_failed_lookup_keeps_the_last_answer() -> None:
    dns = Dns({"hubforge-proxy": {"10.0.0.2"}})
    peers = ProxyPeers(["hubforge-proxy"], refresh_s=0.0, resolver=dns)
    dns.answers["hubforge-proxy"] = {"10.0.0.3"}  # the proxy pod restarted elsewhere
    peers.trusts("10.0.0.2")  # stale: looked up again, in the background
    deadline = time.monotonic() + 5
    while peers.addresses != {"10.0.0.3"} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peers.addresses == {"10.0.0.3"}
    del dns.answers["hubforge-proxy"]
    peers._refresh()
    assert peers.addresses == {"10.0.0.3"}, "a DNS failure does not drop the proxy"


def test_the_environment_names_the_peers_and_one_machine_names_none() -> None:
    assert proxies.from_env({}) is None
    assert proxies.from_env({PROXY_PEERS_ENV: " "}) is None
    peers = proxies.from_env({PROXY_PEERS_ENV: "127.0.0.1, ::1"})
    assert peers is not None and peers.addresses == {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    ("peer", "expected"), [("10.0.0.2", "203.0.113.7"), ("10.0.0.9", "10.0.0.9")], ids=["proxy", "stranger"]
)
def test_mlflow_records_where_a_request_came_from(peer: str, expected: str) -> None:
    peers = ProxyPeers(["hubforge-proxy"], resolver=Dns({"hubforge-proxy": {"10.0.0.2"}}))
    scope = {
        "client": (peer, 40000),
        "headers": [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"203.0.113.7")],
    }
    watch = Watch(None, lambda params, answer: None, scope, peers)  # type: ignore[arg-type]
    assert watch.client_address == expected
    assert Watch(None, lambda params, answer: None, scope).client_address == peer  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "expected"),
    [("10.0.0.2", ("203.0.113.7", "https")), ("10.0.0.9", ("10.0.0.9", "http"))],
    ids=["proxy", "stranger"],
)
def test_governance_handlers_see_the_client_behind_the_proxy_only(peer: str, expected: tuple[str, str]) -> None:
    from tornado import web

    peers = ProxyPeers(["hubforge-proxy"], resolver=Dns({"hubforge-proxy": {"10.0.0.2"}}))
    app = web.Application(proxy_peers=peers)
    headers = HTTPHeaders(
        {"Host": "hub:10101", "X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"}
    )

    class Connection:
        def set_close_callback(self, callback: object) -> None:
            pass

    start = RequestStartLine("GET", "/services/governance/api/health", "HTTP/1.1")
    request = HTTPServerRequest(start_line=start, headers=headers, connection=Connection())
    request.remote_ip = peer
    handler = HubAuthHandler(app, request)
    assert (handler.request.remote_ip, handler.request.protocol) == expected
