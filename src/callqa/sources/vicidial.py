"""A ViciDial dialer as a source of calls: its database rows (read-only) and where each recording's files are.

ViciDial (Asterisk + MySQL/MariaDB) logs every recording in ``recording_log``. ``vicidial_id`` is
``vicidial_log.uniqueid`` for outbound calls and ``vicidial_closer_log.closecallid`` for inbound ones; ``user`` is
``vicidial_users.user``; the campaign (outbound) or in-group (inbound) names the call's ``campaign_id``;
``vicidial_carrier_log`` holds the hangup causes of outbound calls; ``vicidial_list`` the lead.

Files: Asterisk writes ``X-in.wav`` and ``X-out.wav`` (the two directions of the recorded channel); the mixing
cron writes ``X-all.wav`` to the folder served as ``http://<server_ip>/RECORDINGS/``, moves the legs to ``ORIG/``
and, after compression, ``MP3/X-all.mp3`` (rewriting ``location``). The separate legs are preferred.

Everything here but :func:`connect`, :func:`read_calls`, :func:`probe` and :func:`fetch` is pure.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from callqa.config import FetchSettings, VicidialSettings
from callqa.errors import FetchError, InputError
from callqa.pii import mask_number
from callqa.report import CallContext, Role

# one row per recording with its joins; every table is only read (see docs/vicidial.md for the GRANT)
QUERY = """
SELECT r.recording_id, r.channel, r.server_ip, r.start_time, r.start_epoch, r.length_in_sec, r.filename,
       r.location, r.lead_id, r.user, r.vicidial_id,
       vl.uniqueid, vl.campaign_id, vl.status, vl.term_reason, vl.phone_number, vl.user_group,
       cl.closecallid, cl.campaign_id, cl.status, cl.term_reason, cl.phone_number, cl.user_group,
       u.full_name, u.user_group, c.campaign_name, ig.group_name,
       cr.channel, cr.hangup_cause, cr.sip_hangup_cause, cr.sip_hangup_reason, cr.dialstatus,
       l.phone_number
FROM recording_log r
LEFT JOIN vicidial_log vl ON vl.uniqueid = r.vicidial_id
LEFT JOIN vicidial_closer_log cl ON vl.uniqueid IS NULL AND r.vicidial_id REGEXP '^[0-9]+$'
                                 AND cl.closecallid = CAST(r.vicidial_id AS UNSIGNED)
LEFT JOIN vicidial_users u ON u.user = r.user
LEFT JOIN vicidial_campaigns c ON c.campaign_id = vl.campaign_id
LEFT JOIN vicidial_inbound_groups ig ON ig.group_id = cl.campaign_id
LEFT JOIN vicidial_carrier_log cr ON cr.uniqueid = r.vicidial_id
LEFT JOIN vicidial_list l ON l.lead_id = r.lead_id
WHERE r.length_in_sec IS NOT NULL AND r.filename IS NOT NULL AND r.filename <> ''
"""

TABLES = ("recording_log", "vicidial_log", "vicidial_closer_log", "vicidial_users", "vicidial_campaigns",
          "vicidial_inbound_groups", "vicidial_carrier_log", "vicidial_list")  # fmt: skip
_DSN_SCHEMES = ("mysql", "mariadb", "mysql+pymysql")
_CHANNEL = re.compile(r"^(?:SIP|PJSIP|IAX2|DAHDI|Zap)/(?P<name>[^/@]+?)(?:-[0-9A-Fa-f]+)?(?:;\d)?$")


@dataclass(frozen=True)
class Dsn:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def dialer(self) -> str:
        """The database's identity without credentials: two dialers' recording ids never mix."""
        return f"{self.host}:{self.port}/{self.database}"


def parse_dsn(dsn: str) -> Dsn:
    """``mysql://USER:PASS@HOST:3306/asterisk`` (user and password percent-encoded when they hold odd
    characters); an InputError names what is wrong without repeating the password."""
    try:
        parts = urlsplit(dsn)
        port = parts.port or 3306
    except ValueError as exc:
        raise InputError(f"the ViciDial DSN is not a valid address: {exc}") from None
    if parts.scheme not in _DSN_SCHEMES:
        raise InputError(f"the ViciDial DSN must start with mysql://, not {parts.scheme or 'nothing'}://")
    database = parts.path.lstrip("/")
    if not parts.hostname or not parts.username or not database:
        raise InputError("the ViciDial DSN needs a user, a host and a database: mysql://USER:PASS@HOST:3306/asterisk")
    return Dsn(parts.hostname, port, unquote(parts.username), unquote(parts.password or ""), database)


@dataclass(frozen=True)
class VicidialCall:
    """One ``recording_log`` row with what its joins say about the call."""

    recording_id: int
    channel: str
    server_ip: str
    start_time: datetime | None
    start_epoch: int | None
    length_in_sec: int | None
    filename: str
    location: str
    lead_id: int | None
    user: str
    vicidial_id: str
    direction: Literal["inbound", "outbound"] | None
    campaign_id: str
    campaign_name: str
    status: str
    term_reason: str
    user_group: str
    agent_name: str
    phone_number: str
    carrier_channel: str
    hangup_cause: int | None
    sip_hangup_cause: int | None
    sip_hangup_reason: str
    dial_status: str

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> VicidialCall:
        """A row of :data:`QUERY` (column order as selected there)."""
        (rec_id, channel, server_ip, start_time, start_epoch, length, filename, location, lead_id, user, vid,
         out_id, out_campaign, out_status, out_term, out_phone, out_group,
         in_id, in_campaign, in_status, in_term, in_phone, in_group,
         full_name, user_group, campaign_name, group_name,
         carrier_channel, hangup_cause, sip_cause, sip_reason, dial_status, lead_phone) = row  # fmt: skip
        outbound, inbound = out_id is not None, in_id is not None
        direction: Literal["inbound", "outbound"] | None = "outbound" if outbound else "inbound" if inbound else None
        return cls(
            recording_id=int(rec_id), channel=_s(channel), server_ip=_s(server_ip), start_time=start_time,
            start_epoch=_i(start_epoch), length_in_sec=_i(length), filename=_s(filename), location=_s(location),
            lead_id=_i(lead_id), user=_s(user), vicidial_id=_s(vid), direction=direction,
            campaign_id=_s(out_campaign if outbound else in_campaign),
            campaign_name=_s(campaign_name if outbound else group_name),
            status=_s(out_status if outbound else in_status), term_reason=_s(out_term if outbound else in_term),
            user_group=_s(out_group if outbound else in_group) or _s(user_group), agent_name=_s(full_name),
            phone_number=_s(out_phone if outbound else in_phone) or _s(lead_phone),
            carrier_channel=_s(carrier_channel), hangup_cause=_i(hangup_cause), sip_hangup_cause=_i(sip_cause),
            sip_hangup_reason=_s(sip_reason), dial_status=_s(dial_status),
        )  # fmt: skip

    def context(self, keep_digits: int, files: Literal["legs", "mixed"] | None) -> CallContext:
        """The call's context for its report; the customer number is masked."""
        when = None
        if self.start_epoch:
            when = datetime.fromtimestamp(self.start_epoch, UTC)
        elif self.start_time is not None:
            when = self.start_time  # the dialer's local time: no better clock is recorded
        return CallContext(
            recording_id=self.recording_id, vicidial_id=self.vicidial_id, lead_id=self.lead_id,
            direction=self.direction, call_date=when, length_in_sec=self.length_in_sec, status=self.status,
            term_reason=self.term_reason, agent=self.user, agent_name=self.agent_name, user_group=self.user_group,
            campaign_id=self.campaign_id, campaign_name=self.campaign_name, carrier=carrier_name(self.carrier_channel),
            hangup_cause=self.hangup_cause if self.carrier_channel or self.hangup_cause else None,
            sip_hangup_cause=self.sip_hangup_cause or None, sip_hangup_reason=self.sip_hangup_reason,
            dial_status=self.dial_status, customer_number=mask_number(self.phone_number, keep_digits),
            server_ip=self.server_ip, files=files,
        )  # fmt: skip


def _s(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _i(value: object) -> int | None:
    try:
        return None if value is None or value == "" else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def carrier_name(channel: str) -> str:
    """The trunk in an Asterisk channel name: ``SIP/telco-0000a1b2`` -> ``telco`` ('' for Local and others)."""
    m = _CHANNEL.match(channel.strip())
    return m.group("name") if m else ""


# --- where the files are -------------------------------------------------------------------------------------

Files = Literal["legs", "mixed"]


@dataclass(frozen=True)
class Candidate:
    """One way to get a recording: its two ORIG legs (in, out) or one mixed file, as URLs or local paths."""

    files: Files
    refs: tuple[str, ...]


def recordings_base(settings: VicidialSettings, server_ip: str) -> str:
    """The folder (URL or local directory) that holds a row's recordings."""
    if settings.recordings_dir is not None:
        return str(settings.recordings_dir)
    return settings.recordings_url.replace("{server_ip}", server_ip).rstrip("/")


def _join(base: str, rel: str) -> str:
    return f"{base}/{rel}" if "://" in base else str(Path(base) / rel)


def candidates(call: VicidialCall, base: str) -> list[Candidate]:
    """How to get a row's recording, best first: the ORIG legs, then the file ``location`` names (kept relative
    to ``/RECORDINGS/``, so the configured base serves it), then ``X-all.wav`` and ``MP3/X-all.mp3``."""
    name = call.filename
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise InputError(f"recording {call.recording_id} has an unusable file name {name!r}")
    legs = Candidate("legs", (_join(base, f"ORIG/{name}-in.wav"), _join(base, f"ORIG/{name}-out.wav")))
    mixed: list[str] = []
    rel = location_path(call.location)
    if rel:
        mixed.append(rel)
    mixed += [f"{name}-all.wav", f"MP3/{name}-all.mp3"]
    return [legs, *(Candidate("mixed", (_join(base, r),)) for r in dict.fromkeys(mixed))]


def location_path(location: str) -> str:
    """``http://10.0.0.5/RECORDINGS/MP3/X-all.mp3`` -> ``MP3/X-all.mp3``: the part below ``RECORDINGS/``
    ('' when the location is empty or names no file there; never a path that leaves the folder)."""
    path = urlsplit(location).path if "://" in location else location
    marker = "/RECORDINGS/"
    if marker not in path:
        return ""
    rel = posixpath.normpath(unquote(path.split(marker, 1)[1]))
    if rel.startswith(("..", "/")) or rel == ".":
        return ""
    return rel


def leg_roles(settings: VicidialSettings) -> list[Role]:
    """Roles of the (in, out) legs: X-in holds what the recorded channel sent to Asterisk."""
    return ["customer", "agent"] if settings.in_leg == "customer" else ["agent", "customer"]


def masked(ref: str, phone: str, keep_digits: int) -> str:
    """A file reference with the customer's number (ViciDial puts it in file names) masked."""
    digits = re.sub(r"\D", "", phone)
    return ref.replace(digits, mask_number(digits, keep_digits)) if len(digits) >= 7 else ref


# --- database and files (I/O) --------------------------------------------------------------------------------


def connect(dsn: Dsn, timeout_s: float) -> Any:
    """A read-only session on the dialer's database (PyMySQL)."""
    import pymysql

    try:
        conn = pymysql.connect(host=dsn.host, port=dsn.port, user=dsn.user, password=dsn.password,
                               database=dsn.database, connect_timeout=timeout_s, read_timeout=max(timeout_s, 60),
                               charset="utf8mb4", autocommit=True)  # fmt: skip
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION READ ONLY")
        return conn
    except pymysql.MySQLError as exc:
        raise FetchError(f"cannot read the ViciDial database {dsn.dialer} as {dsn.user}: {exc.args[-1]}") from None


@dataclass(frozen=True)
class RowFilter:
    since: datetime | None = None  # on recording_log.start_time, the dialer's clock
    until: datetime | None = None
    lookback_s: float | None = None  # rows that started this long ago or later (start_epoch)
    campaigns: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    recording_ids: tuple[int, ...] = ()


def build_query(f: RowFilter) -> tuple[str, list[object]]:
    """:data:`QUERY` with the filter's conditions, every value bound."""
    sql, args = QUERY, list[object]()
    if f.recording_ids:
        sql += f" AND r.recording_id IN ({', '.join(['%s'] * len(f.recording_ids))})"
        args += list(f.recording_ids)
    if f.since is not None:
        sql += " AND r.start_time >= %s"
        args.append(f.since)
    if f.until is not None:
        sql += " AND r.start_time < %s"
        args.append(f.until)
    if f.lookback_s is not None and f.since is None and not f.recording_ids:
        sql += " AND r.start_epoch >= UNIX_TIMESTAMP() - %s"
        args.append(int(f.lookback_s))
    if f.campaigns:
        marks = ", ".join(["%s"] * len(f.campaigns))
        sql += f" AND COALESCE(vl.campaign_id, cl.campaign_id) IN ({marks})"
        args += list(f.campaigns)
    if f.agents:
        sql += f" AND r.user IN ({', '.join(['%s'] * len(f.agents))})"
        args += list(f.agents)
    return sql + " ORDER BY r.recording_id", args


def read_calls(conn: Any, f: RowFilter) -> list[VicidialCall]:
    import pymysql

    sql, args = build_query(f)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return [VicidialCall.from_row(tuple(row)) for row in cur.fetchall()]
    except pymysql.MySQLError as exc:
        raise FetchError(f"reading the ViciDial recordings failed: {exc.args[-1]}") from None


def _local(ref: str, base: Path) -> Path:
    path = Path(ref).resolve()
    if not path.is_relative_to(base.resolve()):
        raise FetchError(f"{ref} is outside the recordings folder {base}")
    return path


def probe(ref: str, settings: VicidialSettings, fetch_settings: FetchSettings) -> str | None:
    """A fingerprint of what ``ref`` holds now (address, size, time), or None when it does not exist."""
    from callqa.sources.http import probe_http

    if "://" in ref:
        return probe_http(ref, fetch_settings)
    assert settings.recordings_dir is not None
    try:
        st = _local(ref, settings.recordings_dir).stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FetchError(f"cannot read {ref}: {exc}") from exc
    return f"{ref} {st.st_size} {st.st_mtime_ns}"


def fetch(ref: str, settings: VicidialSettings, fetch_settings: FetchSettings, dest_dir: Path) -> Path:
    """The file behind ``ref``: downloaded into ``dest_dir``, or the local file itself."""
    from callqa.sources.http import fetch_http

    if "://" in ref:
        return fetch_http(ref, fetch_settings, dest_dir)
    assert settings.recordings_dir is not None
    path = _local(ref, settings.recordings_dir)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise FetchError(f"{ref} does not exist or is not readable")
    return path
