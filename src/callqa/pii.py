"""Mask personal data in text: payment card numbers (Luhn-checked), national ids, phone numbers and emails.

Used on everything sent to a language model provider. ``mask_value`` walks JSON-like data and masks strings
only, so numeric fields (SSRCs, packet counts) stay intact. Patterns are deliberately conservative about what
is *not* personal: ISO dates, times, IP addresses and hexadecimal call ids are left alone.
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


# (pattern, label, extra check), in priority order: an earlier kind wins where two overlap
_KINDS: tuple[tuple[re.Pattern[str], str, Any], ...] = (
    (EMAIL, "[EMAIL]", None),
    (CARD, "[CARD]", _is_card),
    (US_SSN, "[NATIONAL_ID]", None),
    (UK_NINO, "[NATIONAL_ID]", None),
    (PHONE, "[PHONE]", _is_phone),
)


def spans(text: str) -> list[tuple[int, int, str]]:
    """Character spans of personal data in ``text`` with their labels, sorted and not overlapping."""
    found: list[tuple[int, int, str]] = []
    for pattern, label, check in _KINDS:
        for m in pattern.finditer(text):
            if check is not None and not check(m.group()):
                continue
            if all(m.end() <= a or m.start() >= b for a, b, _ in found):
                found.append((m.start(), m.end(), label))
    return sorted(found)


def mask_text(text: str) -> str:
    out, pos = [], 0
    for a, b, label in spans(text):
        out += [text[pos:a], label]
        pos = b
    return "".join(out) + text[pos:]


def mask_value(value: Any) -> Any:
    """Mask every string inside a JSON-like value (dict keys are left as they are)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v) for v in value]
    return value


def mask_number(number: str, keep: int = 2) -> str:
    """A phone number with every digit but the last ``keep`` replaced by ``*`` (``5551234567`` ->
    ``********67``); short numbers are masked whole. Anything but digits is dropped."""
    digits = re.sub(r"\D", "", number)
    if len(digits) <= keep + 4:
        return "*" * len(digits)
    return "*" * (len(digits) - keep) + digits[len(digits) - keep :]
