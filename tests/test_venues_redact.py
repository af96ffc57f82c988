"""A venue that echoes the signed request in an error body must not carry the signature, the key
or the passphrase into any reason, problem line or log: ccxt's real okx, bybit and binance classes
sign the request, a recorded error answer echoes it in the shapes venues and proxies use (JSON
inside JSON, escaped slashes, URL-encoded, raw header lines), and everything the broker says is
searched for each secret in each encoding."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit

import pytest

from engine.venues.redact import Redactor
from tests.test_venues_support import KEYS, Call, FakeClock, R, make_broker, new_order

ERRORS = {  # a signature error each venue really answers, plus the echo
    "okx": ("POST", r"/api/v5/trade/batch-orders", 401, {"code": "50113", "msg": "Invalid Sign"}),
    "bybit": ("POST", r"/v5/order/create", 200, {"retCode": 10004, "retMsg": "error sign!"}),
    "binance": (
        "POST",
        r"/api/v3/order\b",
        400,
        {"code": -1022, "msg": "Signature for this request is not valid."},
    ),
}
SIGNED_FIELDS = ("ok-access-sign", "x-bapi-sign", "signature")


def _signed_first(call: Call) -> dict[str, str]:
    """The request's fields, those carrying the signature first (a reason is cut at 300
    characters: what comes first is what would be shown)."""
    fields = [(k, str(v)) for k, v in call.headers.items()]
    for text in (urlsplit(call.url).query, str(call.body or "")):
        fields += parse_qsl(text)
    fields.sort(key=lambda kv: kv[0].lower() not in SIGNED_FIELDS)
    return dict(fields)


ECHOES = {  # the request as venues and proxies quote it back
    "json_in_json": lambda f: json.dumps(json.dumps(f)),
    "escaped_slashes": lambda f: json.dumps(f).replace("/", "\\/"),
    "url_encoded": urlencode,
    "raw_headers": lambda f: "\n".join(f"{k}: {v}" for k, v in f.items()),
    "python_repr": repr,
}


def signed_values(call: Call) -> list[str]:
    """Every value the request carries that is derived from the secret."""
    values = [str(v) for k, v in call.headers.items() if k.lower() in SIGNED_FIELDS]
    for text in (urlsplit(call.url).query, str(call.body or "")):
        values += [v for k, v in parse_qsl(text) if k.lower() in SIGNED_FIELDS]
    return values


def encodings(value: str) -> set[str]:
    return {value, quote(value, safe=""), quote_plus(value), value.replace("/", "\\/")}


@pytest.mark.parametrize("shape", sorted(ECHOES))
@pytest.mark.parametrize("venue", sorted(ERRORS))
async def test_a_venue_echoing_the_signed_request_leaks_nothing(
    venue: str, shape: str, monkeypatch: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    method, path, status, error = ERRORS[venue]
    echoed: list[Call] = []

    def answer(call: Call) -> tuple[int, Any]:
        echoed.append(call)
        return status, {**error, "echo": ECHOES[shape](_signed_first(call))}

    broker, http = make_broker(monkeypatch, venue, clock=FakeClock())
    await broker.start()
    http.add(R(method, path, answer, times=1))
    texts = [repr(u) for u in await broker.submit(new_order(venue, price=None))]
    texts += [*broker.problems, repr(broker.redactor)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.exc_text or "") for r in caplog.records]
    await broker.close()
    assert echoed, "the order request never reached the recorded venue"
    assert any('"echo"' in t for t in texts), "the echoed error body is not in any message"
    secrets = [KEYS["apiKey"], KEYS["secret"], KEYS["password"]]
    derived = [v for call in echoed for v in signed_values(call)]
    assert derived, "no signature found in the signed request"
    for text in texts:
        for value in [*secrets, *derived]:
            for encoded in encodings(value):
                # At the 300-character cut a reason may end in a value's first characters.
                assert encoded[:16] not in text, (venue, encoded, text[:400])


@pytest.mark.parametrize(
    "text",
    [
        '{"OK-ACCESS-SIGN": "TefwRc4Yoag/khzSqUM1NkWX//b9SaNNaDvkiatC4uc="}',
        '{\\"OK-ACCESS-SIGN\\": \\"TefwRc4Yoag/khzSqUM1NkWX//b9SaNNaDvkiatC4uc=\\"}',
        '"OK-ACCESS-SIGN":"TefwRc4Yoag\\/khzSqUM1NkWX\\/\\/b9SaNNaDvkiatC4uc="',
        "OK-ACCESS-SIGN=TefwRc4Yoag%2FkhzSqUM1NkWX%2F%2Fb9SaNNaDvkiatC4uc%3D",
        "x-bapi-sign: 9c0a1f2e3d4c5b6a79880a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f",
        "query: symbol=BTCUSDT&timestamp=1&signature=9c0a1f2e3d4c5b6a79880a1b2c3d4e5f6071",
    ],
)
def test_signature_fields_are_masked_by_name_in_any_quoting(text: str) -> None:
    """Without having seen the request (another process, an old log): the field's name is
    enough, however the text around it is quoted."""
    out = Redactor().text(text)
    assert "***" in out
    for secret in ("TefwRc4Yoag", "9c0a1f2e3d4c5b6a"):
        assert secret not in out, out


def test_key_and_passphrase_fields_are_masked_by_name() -> None:
    text = json.dumps(
        json.dumps(
            {
                "OK-ACCESS-KEY": "0f1e2d3c-4b5a-6978",
                "OK-ACCESS-PASSPHRASE": "Pass-phrase_42!",
                "X-BAPI-API-KEY": "XBAPIKEYVALUE1",
                "X-MBX-APIKEY": "MBXKEYVALUE123",
            }
        )
    )
    out = Redactor().text(text)
    for secret in ("0f1e2d3c", "Pass-phrase_42", "XBAPIKEYVALUE1", "MBXKEYVALUE123"):
        assert secret not in out, out
