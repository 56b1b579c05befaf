"""Masking of personal data before anything goes to a language model provider."""

from __future__ import annotations

import pytest

from callqa.pii import luhn_ok, mask_file_name, mask_source, mask_text, mask_value
from callqa.speech.redaction import redact_event


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


# Every format named in callqa.pii's docstring, with neighbours that must stay as they are.
@pytest.mark.parametrize(("text", "expected"), [
    # phone numbers, national and E.164 forms
    ("call 555.123.4567 today", "call [PHONE] today"),
    ("call (555) 123-4567 or +1 555 123 4567", "call [PHONE] or [PHONE]"),
    ("portable 06 12 34 56 78 ou 06.12.34.56.78", "portable [PHONE] ou [PHONE]"),
    ("Tel. +49 30 1234567", "Tel. [PHONE]"),
    ("+44.20.7946.0958", "[PHONE]"),
    ("from 10.0.0.138 and 192.168.100.200, v2.14.3, on 12.03.2024, pi 3.14159265", None),
    # IBANs of several countries (check digits decide), grouped or not; a wrong check digit is left alone
    ("IBAN DE89 3704 0044 0532 0130 00, thanks", "IBAN [IBAN], thanks"),
    ("GB82WEST12345698765432", "[IBAN]"),
    ("FR14 2004 1010 0505 0001 3M02 606", "[IBAN]"),
    ("NL91ABNA0417164300", "[IBAN]"),
    ("GB82WEST12345698765431", None),
    # numbers read out as words (as a transcript writes them)
    ("my number is five five five, one two three, four five six seven", "my number is [PHONE]"),
    ("card four one one one one one one one one one one one one one one one", "card [CARD]"),
    ("oh seven nine four six, zero nine five eight", "[PHONE]"),
    ("call me at three, or at one or two", None),
    ("one of the two agents said four times", None),
    # SIP display names (the URI's host stays: trunks remain recognisable)
    ('From: "John Doe" <sip:1001@pbx.example>;tag=9', "From: [NAME] <sip:1001@pbx.example>;tag=9"),
    ("To: Jane Roe <sip:+15551234567@trunk.example>", "To: [NAME] <sip:[PHONE]@trunk.example>"),
    ("Alice <sips:alice@pbx.example>", "[NAME] <sips:alice@pbx.example>"),
])  # fmt: skip
def test_mask_text_formats(text: str, expected: str | None) -> None:
    assert mask_text(text) == (text if expected is None else expected)


@pytest.mark.parametrize(("source", "expected"), [
    ("upload:john.doe_example.com-agent.wav", "upload:[FILE]-agent.wav"),
    ("upload:0-Mary_Smith.wav + upload:1-Bob-Jones-customer.wav", "upload:[FILE].wav + upload:[FILE]-customer.wav"),
    ("https://rec.example.com/2026/11/john-smith-in.mp3", "https://rec.example.com/[FILE]-in.mp3"),
    ("/srv/recordings/Mary Smith/call.wav", "[FILE].wav"),
    ("sftp:vici:/RECORDINGS/20261120-1001-jsmith-all.wav", "sftp:[FILE]-all.wav"),
    ("calls.pcap#3f29a81b/caller", "[FILE].pcap#3f29a81b/caller"),
])  # fmt: skip
def test_sources_lose_their_names(source: str, expected: str) -> None:
    assert mask_source(source) == expected


def test_model_sees_no_name_or_email_of_a_file() -> None:
    data = {"source": "upload:john.doe_example.com-agent.wav", "legs": [{"source": "upload:jane@x.org.wav"}],
            "note": "file jane@x.org.wav"}  # fmt: skip
    masked = mask_value(data)
    assert masked == {"source": "upload:[FILE]-agent.wav", "legs": [{"source": "upload:[FILE].wav"}],
                      "note": "file [EMAIL]"}  # fmt: skip


def test_upload_file_names_are_masked_before_they_become_labels() -> None:
    assert mask_file_name("john.doe@example.com-agent.wav") == "[EMAIL]-agent.wav"
    assert mask_file_name("555.123.4567.mp3") == "[PHONE].mp3"
    assert mask_file_name("agent.wav") == "agent.wav"


def test_live_events_are_masked_but_keep_their_ids() -> None:
    spoken = "reach me on five five five one two three four five six seven please"
    said = spoken.split()
    event = {"type": "final", "call_id": "a84b4c76e66710@pc33.example.com", "leg": "caller", "start_s": 1.0,
             "text": " ".join(said), "latency_s": 0.5,
             "words": [{"word": w, "start_s": i * 0.3, "end_s": i * 0.3 + 0.2, "probability": 0.9}
                       for i, w in enumerate(said)]}  # fmt: skip
    out = redact_event(event)
    assert out["text"] == "reach me on [PHONE] please"
    assert [w["word"] for w in out["words"]][3:13] == ["[PHONE]"] * 10
    assert out["words"][0] == event["words"][0] and out["call_id"] == event["call_id"]
    rule = redact_event({"type": "rule", "call_id": "c", "words": "write to bob@example.com", "rule": "no-email"})
    assert rule["words"] == "write to [EMAIL]" and rule["call_id"] == "c"
