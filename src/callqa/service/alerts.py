"""Incidents out: each evaluation's opened and closed incidents to a webhook (JSON), by e-mail (SMTP) and to
Alertmanager (its v2 API, ``POST /api/v2/alerts``); the service runs ``run_evaluation`` every
``alerts.interval_s``. A receiver that fails is logged and named in the result; it never stops the evaluation.

Alertmanager forgets an alert that is not sent again before its ``endsAt``: every open incident is sent at each
evaluation with ``endsAt`` three intervals ahead, and a closed one once with its closing time.
"""

from __future__ import annotations

import logging
import smtplib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx

from callqa import incidents
from callqa.config import AlertSettings
from callqa.incidents import Evaluation, Incident
from callqa.store import Store

log = logging.getLogger("callqa.alerts")
ALERT_NAME = "CallqaSystemicFault"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _call_links(cfg: AlertSettings, inc: Incident) -> list[str]:
    base = cfg.public_url.rstrip("/")
    return [f"{base}/ui/calls/{call_id}" if base else call_id for call_id in inc.worst]


def event(cfg: AlertSettings, kind: str, inc: Incident) -> dict[str, Any]:
    """The webhook's JSON for one opened or closed incident."""
    return {"event": kind, "summary": inc.summary, "incident": inc.as_json(), "worst_calls": _call_links(cfg, inc),
            "opened_at": _iso(inc.opened_at), "closed_at": _iso(inc.closed_at) if inc.closed_at else None}  # fmt: skip


def alertmanager_alert(cfg: AlertSettings, inc: Incident, now: float, interval_s: float) -> dict[str, Any]:
    """One postableAlert of Alertmanager's v2 API; ``now`` is the sending time (Alertmanager's clock)."""
    ends = inc.closed_at if inc.closed_at is not None else now + 3 * max(interval_s, 60.0)
    alert: dict[str, Any] = {
        "labels": {"alertname": ALERT_NAME, "dimension": inc.dimension, "group": inc.group, "fault": inc.metric,
                   "severity": "critical" if inc.metric in ("one_way_audio", "no_media") else "warning",
                   "incident": inc.id},
        "annotations": {"summary": inc.summary, "worst_calls": " ".join(_call_links(cfg, inc))},
        "startsAt": _iso(inc.opened_at),
        "endsAt": _iso(ends),
    }  # fmt: skip
    if cfg.public_url:
        alert["generatorURL"] = f"{cfg.public_url.rstrip('/')}/incidents?state=open"
    return alert


def _mail(cfg: AlertSettings, events: list[dict[str, Any]]) -> None:
    msg = EmailMessage()
    opened = sum(e["event"] == "opened" for e in events)
    msg["Subject"] = f"callqa: {opened} incident(s) opened, {len(events) - opened} closed"
    msg["From"] = cfg.mail_from
    msg["To"] = ", ".join(cfg.mail_to)
    lines = []
    for e in events:
        lines.append(f"{e['event'].upper()}: {e['summary']}")
        lines.append(f"  opened {e['opened_at']}" + (f", closed {e['closed_at']}" if e["closed_at"] else ""))
        lines += [f"  worst call: {link}" for link in e["worst_calls"]]
        lines.append("")
    msg.set_content("\n".join(lines))
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
        if cfg.smtp_starttls:
            smtp.starttls()
        if cfg.smtp_user:
            smtp.login(cfg.smtp_user, cfg.smtp_password.get_secret_value() if cfg.smtp_password else "")
        smtp.send_message(msg)


@dataclass
class Sent:
    webhook: int = 0  # events posted
    mails: int = 0
    alerts: int = 0  # alerts posted to Alertmanager
    errors: list[str] = field(default_factory=list)


def notify(cfg: AlertSettings, ev: Evaluation, interval_s: float | None = None) -> Sent:
    """Send an evaluation's news to every configured receiver."""
    sent = Sent()
    events = [event(cfg, "opened", i) for i in ev.opened] + [event(cfg, "closed", i) for i in ev.closed]
    if events and cfg.webhook_url:
        try:
            for e in events:
                httpx.post(cfg.webhook_url, json=e, timeout=cfg.timeout_s).raise_for_status()
                sent.webhook += 1
        except httpx.HTTPError as exc:
            sent.errors.append(f"webhook: {exc}")
    if events and cfg.smtp_host and cfg.mail_to:
        try:
            _mail(cfg, events)
            sent.mails += 1
        except (OSError, smtplib.SMTPException) as exc:
            sent.errors.append(f"smtp: {exc}")
    sending = time.time()
    alerts = [alertmanager_alert(cfg, i, sending, interval_s or cfg.interval_s) for i in [*ev.open, *ev.closed]]
    if alerts and cfg.alertmanager_url:
        try:
            url = f"{cfg.alertmanager_url.rstrip('/')}/api/v2/alerts"
            httpx.post(url, json=alerts, timeout=cfg.timeout_s).raise_for_status()
            sent.alerts += len(alerts)
        except httpx.HTTPError as exc:
            sent.errors.append(f"alertmanager: {exc}")
    for error in sent.errors:
        log.warning("incident notification failed: %s", error)
    return sent


def run_evaluation(store: Store, cfg: AlertSettings, now: float | None = None) -> tuple[Evaluation, Sent]:
    """Evaluate the window ending now and send what changed."""
    ev = incidents.evaluate(store, cfg, time.time() if now is None else now)
    return ev, notify(cfg, ev)
