"""Masking of personal data before anything goes to a language model provider."""

from __future__ import annotations

import pytest

from callqa.pii import luhn_ok, mask_text, mask_value


@pytest.mark.parametrize(("text", "expected"), [
    ("card 4111 1111 1111 1111 exp 12/29", "card [CARD] exp 12/29"),
    ("card 5500-0000-0000-0004", "card [CARD]"),
    ("ref 4111 1111 1111 1112", "ref 4111 1111 1111 1112"),  # fails Luhn: not a card (16 digits: not a phone)
    ("ssn 078-05-1120.", "ssn [NATIONAL_ID]."),
    ("NI number AB 12 34 56 C", "NI number [NATIONAL_ID]"),
    ("call +44 20 7946 0958 or (020) 7946-0958", "call [PHONE] or [PHONE]"),
    ("From: <sip:+15551234567@pbx.example>;tag=1", "From: <sip:[PHONE]@pbx.example>;tag=1"),
    ("mail jane.doe@example.co.uk now", "mail [EMAIL] now"),
    ("<sip:alice@pbx.example>", "<sip:alice@pbx.example>"),  # a SIP URI is not an email
    ("ext 1001 at 2026-11-20T10:00:00Z from 192.168.100.200:10000", None),  # dates, times, IPs, ports
    ("call 3f29a81b0c7d4e65 lasted 175.3 s, SSRC 0x1234abcd", None),  # ids and measurements
])  # fmt: skip
def test_mask_text(text: str, expected: str | None) -> None:
    assert mask_text(text) == (text if expected is None else expected)


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713") and not luhn_ok("79927398710")


def test_mask_value_masks_strings_only() -> None:
    data = {"from": "sip:+15551234567@x", "ssrc": 3735928559, "legs": [{"note": "bob@example.com"}], "n": None}
    assert mask_value(data) == {"from": "sip:[PHONE]@x", "ssrc": 3735928559, "legs": [{"note": "[EMAIL]"}],
                                "n": None}  # fmt: skip
