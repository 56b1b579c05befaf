"""Mask personal data in text: payment card numbers (Luhn-checked), IBANs (ISO 13616 check digits), national
ids, phone numbers (grouped by spaces, dashes, parentheses or dots), numbers read out as words ("five five
five one two three ..."), emails and SIP display names.

Used on everything sent to a language model provider. ``mask_value`` walks JSON-like data and masks strings
only, so numeric fields (SSRCs, packet counts) stay intact; a ``source`` (a recording's file name or path,
which may name a person) keeps only its scheme, host, leg role and extension. Patterns are deliberately
conservative about what is *not* personal: ISO dates, times, IP addresses, version numbers and hexadecimal
call ids are left alone.

Formats with test vectors: cards (any issuer, Luhn), IBAN (every ISO 13616 country: the check digits decide),
US SSN, UK NINO, phone numbers in E.164 and national forms (+1 555 123 4567, (555) 123-4567, 555.123.4567,
+44 20 7946 0958, 06 12 34 56 78, 06.12.34.56.78, +49 30 1234567), English digit words.
"""

from __future__ import annotations

import re
from typing import Any

EMAIL = re.compile(r"(?<!sip:)(?<!sips:)(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by single spaces or dashes
CARD = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])")
US_SSN = re.compile(r"(?<![\w.-])\d{3}-\d{2}-\d{4}(?![\w-])")
UK_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
# an optional +, then 7-15 digits grouped by spaces, dashes or parentheses (dots are left to IP addresses)
PHONE = re.compile(r"(?<![\w.-])\+?\(?\d[\d ()-]{5,}\d(?![\w.]|:\d)")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
# digits grouped by dots (555.123.4567, 06.12.34.56.78): at least three groups and nine digits, so that IPv4
# addresses (four groups of at most three digits), dates and version numbers are not taken
DOTTED_PHONE = re.compile(r"(?<![\w.])\+?\d{1,4}(?:\.\d{1,4}){2,5}(?![\w]|\.\d)")
# ISO 13616: two letters, two check digits, 11-30 letters or digits (often in groups of four)
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# a SIP display name: quoted anywhere before <sip:...>, or unquoted at the start of a header value
SIP_NAME = re.compile(
    r'"[^"<>\n]{1,80}"(?=\s*<sips?:)'
    r"|(?:(?<=^)|(?<=[:,])|(?<=[:,] ))[A-Za-z][\w.'-]*(?: [\w.'-]+){0,4}(?= *<sips?:)"
)
# digits as people say them and as Whisper writes them ("for" is how it often hears a lone "four")
DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "for": "4",
               "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}  # fmt: skip
_STRIP = re.compile(r"^[^\w+]+|[^\w]+$")
_TOKEN = re.compile(r"\S+")
ROLE_WORDS = ("agent", "customer", "caller", "callee", "in", "out", "left", "right", "mixed", "all")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _is_phone(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 7 <= len(digits) <= 15 and not ISO_DATE.match(text.lstrip("+("))


def _is_dotted_phone(text: str) -> bool:
    groups = text.lstrip("+").split(".")
    digits = "".join(groups)
    ipv4 = len(groups) == 4 and all(len(g) <= 3 for g in groups)
    return 9 <= len(digits) <= 15 and not ipv4


def iban_ok(text: str) -> bool:
    """ISO 13616 / ISO 7064 mod 97-10: the rearranged number, letters as 10-35, leaves 1."""
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    n = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(n) % 97 == 1


def digits_of(word: str) -> str | None:
    """The digits a word stands for ("488," -> "488", "Zero" -> "0"), or None if it is not a number."""
    core = _STRIP.sub("", word.lower()).replace(",", "").replace("-", "")
    if core.isdigit():
        return core
    return DIGIT_WORDS.get(core)


def number_label(digits: str) -> str | None:
    """What a run of spoken digits is: a card (13-19 digits, Luhn), a phone number (7-15), any longer number
    (a misheard card must not leak), or nothing (shorter runs: times, amounts, extensions)."""
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return "[CARD]"
    if 7 <= len(digits) <= 15:
        return "[PHONE]"
    if len(digits) > 15:
        return "[NUMBER]"
    return None


def _spoken_numbers(text: str) -> list[tuple[int, int, str]]:
    """Runs of words that are digits ("five five five, one two three ...") forming a phone or card number.
    Runs made only of written digits are left to the written patterns."""
    out: list[tuple[int, int, str]] = []
    run: list[tuple[re.Match[str], str]] = []
    for m in [*_TOKEN.finditer(text), None]:
        d = digits_of(m.group()) if m is not None else None
        if d is not None:
            run.append((m, d))  # type: ignore[arg-type]
            continue
        if run and any(not w.group().strip(",.;:!?").isdigit() for w, _ in run):
            label = number_label("".join(x for _, x in run))
            if label:
                last = run[-1][0]
                end = last.start() + len(last.group().rstrip(",.;:!?"))
                out.append((run[0][0].start(), end, label))
        run = []
    return out


def _sip_names(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), "[NAME]") for m in SIP_NAME.finditer(text) if m.group().strip()]


# (pattern, label, extra check), in priority order: an earlier kind wins where two overlap
_KINDS: tuple[tuple[re.Pattern[str], str, Any], ...] = (
    (EMAIL, "[EMAIL]", None),
    (CARD, "[CARD]", _is_card),
    (IBAN, "[IBAN]", iban_ok),
    (US_SSN, "[NATIONAL_ID]", None),
    (UK_NINO, "[NATIONAL_ID]", None),
    (PHONE, "[PHONE]", _is_phone),
    (DOTTED_PHONE, "[PHONE]", _is_dotted_phone),
)


def spans(text: str) -> list[tuple[int, int, str]]:
    """Character spans of personal data in ``text`` with their labels, sorted and not overlapping."""
    found: list[tuple[int, int, str]] = []

    def add(a: int, b: int, label: str) -> None:
        if all(b <= x or a >= y for x, y, _ in found):
            found.append((a, b, label))

    for pattern, label, check in _KINDS:
        for m in pattern.finditer(text):
            if check is None or check(m.group()):
                add(m.start(), m.end(), label)
    for a, b, label in _spoken_numbers(text) + _sip_names(text):
        add(a, b, label)
    return sorted(found)


def mask_text(text: str) -> str:
    out, pos = [], 0
    for a, b, label in spans(text):
        out += [text[pos:a], label]
        pos = b
    return "".join(out) + text[pos:]


_URL_HEAD = re.compile(r"^(?P<head>[a-z][a-z0-9+.-]*://[^/\s]+|[a-z]+:)", re.IGNORECASE)
_ROLE_TAIL = re.compile(r"[-_.](" + "|".join(ROLE_WORDS) + r")$", re.IGNORECASE)


def mask_source(text: str) -> str:
    """A recording's source with its names removed: file names and paths may carry a person's name or email
    (``upload:john.doe_example.com-agent.wav``). Kept: a URL's scheme and host or a prefix like ``upload:``,
    the leg role at the end of the name and the extension; the rest becomes ``[FILE]``. Several sources
    joined by " + " are masked one by one; a capture's ``#call/direction`` suffix is kept."""
    if " + " in text:
        return " + ".join(mask_source(part) for part in text.split(" + "))
    text, _, fragment = text.partition("#")
    m = _URL_HEAD.match(text)
    head = m.group("head") if m and not re.match(r"^[a-z]:\\", text, re.IGNORECASE) else ""
    rest = text[len(head) :]
    name = rest.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot or not 1 <= len(ext) <= 5 or not ext.isalnum():
        stem, ext = name, ""
    role = _ROLE_TAIL.search(stem)
    masked = "[FILE]" + (role.group(0) if role else "") + (f".{ext}" if ext else "")
    sep = "/" if "://" in head else ""
    return head + sep + masked + (f"#{mask_text(fragment)}" if fragment else "")


def mask_file_name(name: str) -> str:
    """A file name with the personal data in its stem masked (``john.doe@example.com-agent.wav`` ->
    ``[EMAIL]-agent.wav``): the extension is kept apart so that it is not read as part of an email's domain."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not 1 <= len(ext) <= 5 or not ext.isalnum():
        return mask_text(name)
    return mask_text(stem) + dot + ext


SOURCE_KEYS = frozenset({"source", "sources", "file", "filename", "path"})


def mask_value(value: Any, key: str | None = None) -> Any:
    """Mask every string inside a JSON-like value (dict keys are left as they are). Strings under a key that
    names a recording's source are masked as sources (:func:`mask_source`)."""
    if isinstance(value, str):
        return mask_source(value) if key in SOURCE_KEYS else mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, key) for v in value]
    return value


def mask_number(number: str, keep: int = 2) -> str:
    """A phone number with every digit but the last ``keep`` replaced by ``*`` (``5551234567`` ->
    ``********67``); short numbers are masked whole. Anything but digits is dropped."""
    digits = re.sub(r"\D", "", number)
    if len(digits) <= keep + 4:
        return "*" * len(digits)
    return "*" * (len(digits) - keep) + digits[len(digits) - keep :]
