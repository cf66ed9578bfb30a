"""Online reads from a notebook: the service's columns back as Feast's ``to_dict``, the
hot keys answered in the kernel, the service's refusals as one line."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from hubforge.features import FeaturesError
from hubforge.features.reader import OnlineFeatures

VALUES = {501: 41.5, 537: 12.0, 600: 88.25}


class Service:
    """The features service's ``api/online``, counting the rows it was asked for."""

    def __init__(self) -> None:
        self.asked: list[list[dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/services/features/api/online"
        assert request.headers["Authorization"] == "token alice-token"
        body = json.loads(request.content)
        if body.get("features") == ["customer_profile:plan"]:
            return httpx.Response(403, json={"status": 403, "message": "customer_profile is restricted: ..."})
        rows = body["entity_rows"]
        self.asked.append(rows)
        ids = [row["merchant_id"] for row in rows]
        return httpx.Response(
            200, json={"features": {"merchant_id": ids, "avg_ticket_usd": [VALUES.get(i) for i in ids]}}
        )


def reader(service: Service, **kwargs: Any) -> OnlineFeatures:
    transport = httpx.MockTransport(service)
    return OnlineFeatures("http://hub/services/features/", "alice-token", transport=transport, **kwargs)


def test_columns_come_back_in_the_order_of_the_rows_and_hot_keys_stay_in_the_kernel() -> None:
    service = Service()
    online = reader(service)
    rows = [{"merchant_id": 501}, {"merchant_id": 537}]
    assert online.get(["merchant_risk:avg_ticket_usd"], rows) == {"merchant_id": [501, 537],
                                                                    "avg_ticket_usd": [41.5, 12.0]}  # fmt: skip
    mixed = [{"merchant_id": 600}, {"merchant_id": 501}, {"merchant_id": 9}]
    assert online.get(["merchant_risk:avg_ticket_usd"], mixed)["avg_ticket_usd"] == [88.25, 41.5, None]
    assert service.asked == [rows, [{"merchant_id": 600}, {"merchant_id": 9}]], "only the rows not kept"
    assert (online.hits, online.misses) == (1, 4)
    online.get(["merchant_risk:avg_ticket_usd", "merchant_risk:category"], rows)
    assert len(service.asked) == 3, "other features are another key"


def test_kept_values_expire_and_the_oldest_keys_go_first() -> None:
    service = Service()
    online = reader(service, ttl=0.0)
    online.get(["merchant_risk:avg_ticket_usd"], [{"merchant_id": 501}])
    online.get(["merchant_risk:avg_ticket_usd"], [{"merchant_id": 501}])
    assert len(service.asked) == 2, "ttl 0 keeps nothing"
    small = reader(service, max_keys=2)
    for merchant in (501, 537, 600, 501):
        small.get(["merchant_risk:avg_ticket_usd"], [{"merchant_id": merchant}])
    assert len(service.asked) == 2 + 4, "501 was pushed out by 537 and 600"


def test_a_refusal_is_the_services_one_line() -> None:
    with pytest.raises(FeaturesError) as refused:
        reader(Service()).get(["customer_profile:plan"], [{"customer_id": 1001}])
    assert str(refused.value) == "features: online read refused (403): customer_profile is restricted: ..."


def test_an_unreachable_service_and_a_kernel_outside_the_platform_are_one_line() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    online = OnlineFeatures("http://hub/services/features", "t", transport=httpx.MockTransport(down))
    with pytest.raises(FeaturesError, match=r"^features: cannot reach the features service at http://hub/"):
        online.get(["merchant_risk:avg_ticket_usd"], [{"merchant_id": 501}])
    with pytest.raises(FeaturesError, match="HUBFORGE_FEATURES_URL is not set"):
        OnlineFeatures.from_env({})


def test_a_refusal_in_a_notebook_is_its_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shown = shell.run_cell(
            "from hubforge.features import FeaturesError\n"
            "raise FeaturesError('features: online read refused (403): customer_profile is restricted: ...')"
        )
    finally:
        InteractiveShell.clear_instance()
    assert isinstance(shown.error_in_exec, FeaturesError)
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "customer_profile is restricted" in text and "Traceback" not in text and "raise " not in text
    assert FeaturesError("x")._render_traceback_() == ["\x1b[0;31mFeaturesError\x1b[0m: x"]
