"""ViciDial end to end: a real MariaDB server holding ViciDial's tables (read by a user with only the documented
GRANT), recordings served by a real HTTP server under /RECORDINGS/, the sync, the CLI, the store's filters and the
HTTP service.

The MariaDB server is the one on 127.0.0.1:3306 (root without password, as ``.ci/run`` starts it); the tests create
and drop their own database and user. Without a reachable server they skip, unless CALLQA_REQUIRE_MARIADB is set
(CI sets it, so there they fail instead).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from callqa.ai.tools import run_tool
from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.config import AnalysisSettings, Settings, VicidialSettings
from callqa.errors import InputError
from callqa.pii import mask_number
from callqa.service.recordings import analyze_recording
from callqa.service.vicidial import SyncOptions, analyze_recording_id, report_id, run_sync
from callqa.sources import vicidial as vd
from callqa.store import CallQuery, Store

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "examples" / "call-agent.wav"
CUSTOMER = REPO / "examples" / "call-customer.wav"
ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

# the tables the sync reads, with ViciDial's own column definitions (extras/MySQL_AST_CREATE_tables.sql), trimmed
# to the columns it uses plus a few neighbours
SCHEMA = [
    """CREATE TABLE recording_log (
        recording_id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL, channel VARCHAR(100),
        server_ip VARCHAR(15), extension VARCHAR(100), start_time DATETIME, start_epoch INT(10) UNSIGNED,
        end_time DATETIME, end_epoch INT(10) UNSIGNED, length_in_sec MEDIUMINT(8) UNSIGNED,
        length_in_min DOUBLE(8,2), filename VARCHAR(100), location VARCHAR(255), lead_id INT(9) UNSIGNED,
        user VARCHAR(20), vicidial_id VARCHAR(20),
        index(filename), index(lead_id), index(user), index(vicidial_id)) ENGINE=MyISAM""",
    """CREATE TABLE vicidial_log (
        uniqueid VARCHAR(20) PRIMARY KEY NOT NULL, lead_id INT(9) UNSIGNED NOT NULL, list_id BIGINT(14) UNSIGNED,
        campaign_id VARCHAR(8), call_date DATETIME, start_epoch INT(10) UNSIGNED, end_epoch INT(10) UNSIGNED,
        length_in_sec INT(10), status VARCHAR(6), phone_code VARCHAR(10), phone_number VARCHAR(18),
        user VARCHAR(20), comments VARCHAR(255), processed ENUM('Y','N'), user_group VARCHAR(20),
        term_reason ENUM('CALLER','AGENT','QUEUETIMEOUT','ABANDON','AFTERHOURS','NONE','SYSTEM') default 'NONE',
        alt_dial VARCHAR(6) default 'NONE', called_count SMALLINT(5) UNSIGNED default '0',
        index (lead_id), index (call_date)) ENGINE=MyISAM""",
    """CREATE TABLE vicidial_closer_log (
        closecallid INT(9) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL, lead_id INT(9) UNSIGNED NOT NULL,
        list_id BIGINT(14) UNSIGNED, campaign_id VARCHAR(20), call_date DATETIME, start_epoch INT(10) UNSIGNED,
        end_epoch INT(10) UNSIGNED, length_in_sec INT(10), status VARCHAR(6), phone_code VARCHAR(10),
        phone_number VARCHAR(18), user VARCHAR(20), comments VARCHAR(255), processed ENUM('Y','N'),
        queue_seconds DECIMAL(7,2) default '0', user_group VARCHAR(20), xfercallid INT(9) UNSIGNED,
        term_reason ENUM('CALLER','AGENT','QUEUETIMEOUT','ABANDON','AFTERHOURS','HOLDRECALLXFER','HOLDTIME',
                         'NOAGENT','NONE','MAXCALLS','ACFILTER','CLOSETIME') default 'NONE',
        uniqueid VARCHAR(20) NOT NULL default '', index (lead_id), index (call_date)) ENGINE=MyISAM""",
    """CREATE TABLE vicidial_users (
        user_id INT(9) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL, user VARCHAR(20) NOT NULL,
        pass VARCHAR(100) NOT NULL, full_name VARCHAR(50), user_level TINYINT(3) UNSIGNED default '1',
        user_group VARCHAR(20), unique index user (user)) ENGINE=MyISAM""",
    """CREATE TABLE vicidial_campaigns (
        campaign_id VARCHAR(8) PRIMARY KEY NOT NULL, campaign_name VARCHAR(40), active ENUM('Y','N'),
        campaign_recording ENUM('NEVER','ONDEMAND','ALLCALLS','ALLFORCE') default 'ONDEMAND') ENGINE=MyISAM""",
    """CREATE TABLE vicidial_inbound_groups (
        group_id VARCHAR(20) PRIMARY KEY NOT NULL, group_name VARCHAR(30), active ENUM('Y','N')) ENGINE=MyISAM""",
    """CREATE TABLE vicidial_carrier_log (
        uniqueid VARCHAR(20) PRIMARY KEY NOT NULL, call_date DATETIME, server_ip VARCHAR(15) NOT NULL,
        lead_id INT(9) UNSIGNED, hangup_cause TINYINT(1) UNSIGNED default '0', dialstatus VARCHAR(16),
        channel VARCHAR(100), dial_time SMALLINT(3) UNSIGNED default '0',
        answered_time SMALLINT(4) UNSIGNED default '0', sip_hangup_cause SMALLINT(4) UNSIGNED default '0',
        sip_hangup_reason VARCHAR(50) default '', caller_code VARCHAR(30) default '',
        index (call_date), index (lead_id)) ENGINE=MyISAM""",
    """CREATE TABLE vicidial_list (
        lead_id INT(9) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL, entry_date DATETIME, list_id BIGINT(14)
        UNSIGNED, status VARCHAR(6), user VARCHAR(20), phone_code VARCHAR(10), phone_number VARCHAR(18),
        first_name VARCHAR(30), last_name VARCHAR(30), index (phone_number)) ENGINE=MyISAM""",
]

NOW = int(time.time())


def _call(rec: int, name: str, user: str, phone: str, lead: int, *, direction: str, campaign: str, status: str,
          term: str, location: str, ago_s: int = 3600, length: int | None = 41, carrier: tuple[str, int, int, str]
          | None = None) -> dict[str, Any]:  # fmt: skip
    return {"rec": rec, "name": name, "user": user, "phone": phone, "lead": lead, "direction": direction,
            "campaign": campaign, "status": status, "term": term, "location": location, "start": NOW - ago_s,
            "length": length, "carrier": carrier}  # fmt: skip


def _name(ago_s: int, phone: str) -> str:  # ViciDial's default FULLDATE_CUSTPHONE file names
    return datetime.fromtimestamp(NOW - ago_s).strftime("%Y%m%d-%H%M%S") + "_" + phone


WEB = "http://10.10.0.5/RECORDINGS/"
CALLS = [
    # separate ORIG legs (and the mixed file): the preferred case
    _call(1, _name(3600, "3125550147"), "1001", "3125550147", 11, direction="outbound", campaign="SALES",
          status="SALE", term="AGENT", location=WEB + _name(3600, "3125550147") + "-all.wav",
          carrier=("SIP/telco_east-0000a1b2", 16, 200, "OK")),
    # inbound, only the mixed -all.wav
    _call(2, _name(3000, "7735550199"), "1002", "7735550199", 12, direction="inbound", campaign="SUPPORT",
          status="RESOLV", term="CALLER", ago_s=3000, location=WEB + _name(3000, "7735550199") + "-all.wav"),
    # compressed: only MP3/-all.mp3, and location says so
    _call(3, _name(2400, "6305550123"), "1002", "6305550123", 13, direction="outbound", campaign="RENEW",
          status="NI", term="CALLER", ago_s=2400, location=WEB + "MP3/" + _name(2400, "6305550123") + "-all.mp3",
          carrier=("PJSIP/telco_west-00000c3d", 16, 0, "")),
    # no file at all
    _call(4, _name(1800, "8475550110"), "1001", "8475550110", 14, direction="outbound", campaign="SALES",
          status="DROP", term="ABANDON", ago_s=1800, location="", carrier=("SIP/telco_east-0000a1c9", 34, 503,
                                                                             "Service Unavailable")),
    # a broken file
    _call(5, _name(1200, "2245550177"), "1001", "2245550177", 15, direction="inbound", campaign="SUPPORT",
          status="CALLBK", term="AGENT", ago_s=1200, location=WEB + _name(1200, "2245550177") + "-all.wav"),
    # the same audio as call 1, another call
    _call(6, _name(600, "3125550188"), "1002", "3125550188", 16, direction="outbound", campaign="SALES",
          status="SALE", term="AGENT", ago_s=600, location=WEB + _name(600, "3125550188") + "-all.wav",
          carrier=("SIP/telco_east-0000a1f0", 16, 200, "OK")),
    # still being recorded: no length yet, not read
    _call(7, _name(30, "3125550100"), "1001", "3125550100", 17, direction="outbound", campaign="SALES",
          status="INCALL", term="NONE", ago_s=30, location="", length=None),
    # a month old: outside the default look-back, read with --since
    _call(8, _name(30 * 86400, "4145550166"), "1001", "4145550166", 18, direction="outbound", campaign="SALES",
          status="SALE", term="AGENT", ago_s=30 * 86400, location=WEB + _name(30 * 86400, "4145550166") + "-all.wav"),
]  # fmt: skip
BY_ID = {c["rec"]: c for c in CALLS}


def _connect(**kw: Any) -> Any:
    import pymysql

    return pymysql.connect(**{**ROOT, **kw}, connect_timeout=5, autocommit=True)


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Any]:
    import pymysql

    try:
        conn = _connect()
    except pymysql.MySQLError as exc:
        if os.environ.get("CALLQA_REQUIRE_MARIADB"):
            pytest.fail(f"CALLQA_REQUIRE_MARIADB is set but MariaDB on 127.0.0.1:3306 is unreachable: {exc}")
        pytest.skip(f"no MariaDB server on 127.0.0.1:3306 as root without password ({exc}); .ci/run starts one")
    yield conn
    conn.close()


def _insert(cur: Any) -> None:
    cur.executemany("INSERT INTO vicidial_users (user, pass, full_name, user_group) VALUES (%s, 'x', %s, %s)",
                    [("1001", "Ana Diaz", "AGENTS_A"), ("1002", "Ben Okafor", "AGENTS_B")])  # fmt: skip
    cur.executemany("INSERT INTO vicidial_campaigns (campaign_id, campaign_name, active, campaign_recording) "
                    "VALUES (%s, %s, 'Y', 'ALLCALLS')", [("SALES", "Spring Sales"), ("RENEW", "Renewals")])  # fmt: skip
    cur.execute("INSERT INTO vicidial_inbound_groups VALUES ('SUPPORT', 'Customer Support', 'Y')")
    for c in CALLS:
        start = datetime.fromtimestamp(c["start"])
        cur.execute("INSERT INTO vicidial_list (lead_id, entry_date, list_id, status, phone_code, phone_number) "
                    "VALUES (%s, %s, 101, %s, '1', %s)", (c["lead"], start, c["status"], c["phone"]))  # fmt: skip
        if c["direction"] == "outbound":
            vid = f"{c['start']}.{c['rec']}"
            cur.execute(
                "INSERT INTO vicidial_log (uniqueid, lead_id, list_id, campaign_id, call_date, start_epoch, end_epoch,"
                " length_in_sec, status, phone_code, phone_number, user, user_group, term_reason) VALUES"
                " (%s, %s, 101, %s, %s, %s, %s, %s, %s, '1', %s, %s, %s, %s)",
                (vid, c["lead"], c["campaign"], start, c["start"], c["start"] + 45, 45, c["status"], c["phone"],
                 c["user"], "AGENTS_A" if c["user"] == "1001" else "AGENTS_B", c["term"]),
            )  # fmt: skip
            if c["carrier"]:
                channel, cause, sip, reason = c["carrier"]
                cur.execute(
                    "INSERT INTO vicidial_carrier_log (uniqueid, call_date, server_ip, lead_id, hangup_cause,"
                    " dialstatus, channel, dial_time, answered_time, sip_hangup_cause, sip_hangup_reason) VALUES"
                    " (%s, %s, '10.10.0.5', %s, %s, %s, %s, 4, 41, %s, %s)",
                    (vid, start, c["lead"], cause, "ANSWER" if cause == 16 else "CONGESTION", channel, sip, reason),
                )  # fmt: skip
        else:
            cur.execute(
                "INSERT INTO vicidial_closer_log (lead_id, list_id, campaign_id, call_date, start_epoch, end_epoch,"
                " length_in_sec, status, phone_code, phone_number, user, queue_seconds, user_group, term_reason,"
                " uniqueid) VALUES (%s, 101, %s, %s, %s, %s, 45, %s, '1', %s, %s, 3.5, %s, %s, %s)",
                (c["lead"], c["campaign"], start, c["start"], c["start"] + 45, c["status"], c["phone"], c["user"],
                 "AGENTS_A" if c["user"] == "1001" else "AGENTS_B", c["term"], f"{c['start']}.9{c['rec']}"),
            )  # fmt: skip
            vid = str(cur.lastrowid)
        length = c["length"]
        cur.execute(
            "INSERT INTO recording_log (recording_id, channel, server_ip, extension, start_time, start_epoch,"
            " end_time, end_epoch, length_in_sec, length_in_min, filename, location, lead_id, user, vicidial_id)"
            " VALUES (%s, %s, '10.10.0.5', '8309', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (c["rec"], f"Local/58600051@default-0000{c['rec']:04x};1", start, c["start"],
             None if length is None else datetime.fromtimestamp(c["start"] + length),
             None if length is None else c["start"] + length, length, None if length is None else length / 60,
             c["name"], c["location"], c["lead"], c["user"], vid),
        )  # fmt: skip


@pytest.fixture(scope="module")
def dialer(mariadb: Any) -> Iterator[str]:
    """A ViciDial database with the calls above; yields the DSN of a user holding only the documented GRANT."""
    db = f"callqa_vd_{secrets.token_hex(4)}"
    user, password = f"cqa_{secrets.token_hex(4)}", "s3cr@t:pw/" + secrets.token_hex(4)
    with mariadb.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"USE {db}")
        for ddl in SCHEMA:
            cur.execute(ddl)
        _insert(cur)
        for host in ("localhost", "127.0.0.1"):
            cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY %s", (password,))
            for table in vd.TABLES:  # docs/vicidial.md: GRANT SELECT on exactly these tables
                cur.execute(f"GRANT SELECT ON {db}.{table} TO '{user}'@'{host}'")
    from urllib.parse import quote

    try:
        yield f"mysql://{user}:{quote(password, safe='')}@127.0.0.1:3306/{db}"
    finally:
        with mariadb.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
            for host in ("localhost", "127.0.0.1"):
                cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")


def _sox(*args: str | Path) -> None:
    subprocess.run(["sox", *map(str, args)], check=True, timeout=60, capture_output=True)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The dialer's web server: /RECORDINGS/ (ViciDial's DONE folder) with ORIG/ and MP3/, on 127.0.0.1."""
    root = tmp_path_factory.mktemp("www")
    rec = root / "RECORDINGS"
    (rec / "ORIG").mkdir(parents=True)
    (rec / "MP3").mkdir()
    for c in (BY_ID[1], BY_ID[6]):  # X-in is what the recorded channel sent: the customer on this dialer
        shutil.copy(CUSTOMER, rec / "ORIG" / f"{c['name']}-in.wav")
        shutil.copy(AGENT, rec / "ORIG" / f"{c['name']}-out.wav")
        _sox("-m", CUSTOMER, AGENT, rec / f"{c['name']}-all.wav")
    for c in (BY_ID[2], BY_ID[8]):
        _sox("-m", CUSTOMER, AGENT, rec / f"{c['name']}-all.wav")
    mixed = rec / "mixed3.wav"
    _sox("-m", CUSTOMER, AGENT, mixed)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(mixed), "-codec:a", "libmp3lame", "-b:a",
                    "32k", str(rec / "MP3" / f"{BY_ID[3]['name']}-all.mp3")], check=True, timeout=60)  # fmt: skip
    mixed.unlink()
    (rec / f"{BY_ID[5]['name']}-all.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + secrets.token_bytes(4000))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/RECORDINGS", rec
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _settings(tmp: Path, dsn: str, url: str, **vicidial: Any) -> Settings:
    return Settings(db=tmp / "store.sqlite3", models_dir=tmp / "models",
                    analysis=AnalysisSettings(nisqa=False, dnsmos=False),
                    vicidial=VicidialSettings(dsn=SecretStr(dsn), recordings_url=url, **vicidial))  # fmt: skip


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory, dialer: str, web: tuple[str, Path]) -> tuple[Settings, Any]:
    """One sync over the dialer, shared by the tests that read its results."""
    settings = _settings(tmp_path_factory.mktemp("sync"), dialer, web[0])
    progress: list[tuple[int, int]] = []
    result = run_sync(settings, SyncOptions(), 1, lambda n, total: progress.append((n, total)))
    return settings, (result, progress)


def _report(settings: Settings, rec: int) -> Any:
    report = Store(settings.db).get(report_id(vd.parse_dsn(settings.vicidial.dsn.get_secret_value()).dialer, rec))  # type: ignore[union-attr]
    assert report is not None, f"no report for recording {rec}"
    return report


# --- the sync -------------------------------------------------------------------------------------------------


def test_sync_analyses_each_finished_recording_and_records_failures(synced: tuple[Settings, Any]) -> None:
    settings, (result, progress) = synced
    assert result.rows == 6  # 7 is still being recorded, 8 is older than the look-back
    assert result.analysed == 4 and result.unchanged == 0
    failed = dict(result.failures)
    assert set(failed) == {4, 5}
    assert "no recording file found" in failed[4] and "ORIG/" in failed[4] and "-all.mp3" in failed[4]
    assert BY_ID[4]["phone"] not in failed[4]  # the customer's number in the file name is masked
    assert "decode" in failed[5].lower() or "audio" in failed[5].lower()
    assert progress[0] == (0, 5) and progress[-1] == (5, 5)


def test_orig_legs_are_preferred_and_mapped_to_agent_and_customer(synced: tuple[Settings, Any],
                                                                  tmp_path: Path) -> None:  # fmt: skip
    settings, _ = synced
    report = _report(settings, 1)
    assert report.context.files == "legs" and not report.warnings
    by_role = {leg.role: leg for leg in report.legs}
    assert set(by_role) == {"agent", "customer"}
    assert by_role["agent"].source.endswith("-out.wav") and "/ORIG/" in by_role["agent"].source
    assert by_role["customer"].source.endswith("-in.wav")
    # the mapping checked on the example call: the agent leg is the example's agent recording
    direct, _ = analyze_recording([AGENT, CUSTOMER], settings.model_copy(update={"db": tmp_path / "d.db"}),
                                  ["agent", "customer"])  # fmt: skip
    want = {leg.role: leg for leg in direct.legs}
    for role in ("agent", "customer"):
        assert by_role[role].levels == want[role].levels
        assert by_role[role].speech_segments == want[role].speech_segments
    assert report.findings == direct.findings and report.verdict == direct.verdict


def test_context_carries_agent_campaign_carrier_and_masks_the_customer(synced: tuple[Settings, Any]) -> None:
    settings, _ = synced
    ctx = _report(settings, 1).context
    c = BY_ID[1]
    assert ctx.source == "vicidial" and ctx.recording_id == 1 and ctx.vicidial_id == f"{c['start']}.1"
    assert (ctx.direction, ctx.agent, ctx.agent_name, ctx.user_group) == ("outbound", "1001", "Ana Diaz", "AGENTS_A")
    assert (ctx.campaign_id, ctx.campaign_name, ctx.status, ctx.term_reason) == ("SALES", "Spring Sales", "SALE",
                                                                                  "AGENT")  # fmt: skip
    assert (ctx.carrier, ctx.hangup_cause, ctx.sip_hangup_cause, ctx.sip_hangup_reason) == ("telco_east", 16, 200, "OK")
    assert ctx.lead_id == 11 and ctx.length_in_sec == 41 and ctx.server_ip == "10.10.0.5"
    assert ctx.call_date == datetime.fromtimestamp(c["start"], UTC)
    assert ctx.customer_number == "********47"
    inbound = _report(settings, 2).context
    assert (inbound.direction, inbound.agent, inbound.agent_name) == ("inbound", "1002", "Ben Okafor")
    assert (inbound.campaign_id, inbound.campaign_name, inbound.term_reason) == ("SUPPORT", "Customer Support",
                                                                                  "CALLER")  # fmt: skip
    assert inbound.carrier == "" and inbound.hangup_cause is None
    assert _report(settings, 3).context.carrier == "telco_west"
    for rec in (1, 2, 3, 6):  # the full number appears nowhere in what is stored
        assert BY_ID[rec]["phone"] not in _report(settings, rec).model_dump_json()


def test_mixed_and_compressed_files_are_analysed_with_the_mixed_warning(synced: tuple[Settings, Any]) -> None:
    settings, _ = synced
    for rec, suffix in ((2, "-all.wav"), (3, "-all.mp3")):
        report = _report(settings, rec)
        assert report.context.files == "mixed"
        assert [leg.role for leg in report.legs] == ["mixed"] and report.legs[0].source.endswith(suffix)
        assert "mixed_legs" in {f.code for f in report.findings}
        assert any(w.startswith("mixed recording") for w in report.warnings)
    assert _report(settings, 3).legs[0].source.split("/RECORDINGS/")[1].startswith("MP3/")


def test_identical_audio_is_two_calls_sharing_one_analysis(synced: tuple[Settings, Any]) -> None:
    settings, _ = synced
    one, six = _report(settings, 1), _report(settings, 6)
    assert one.id != six.id and one.cache_key == six.cache_key
    assert (one.context.agent, six.context.agent) == ("1001", "1002")
    assert one.legs[0].levels == six.legs[0].levels and BY_ID[6]["name"] in six.legs[0].source.replace(
        mask_number(BY_ID[6]["phone"]), BY_ID[6]["phone"])  # fmt: skip


def test_store_filters_by_agent_campaign_carrier_and_direction(synced: tuple[Settings, Any]) -> None:
    settings, _ = synced
    store = Store(settings.db)

    def ids(**kw: Any) -> set[int]:
        return {store.get(r.id).context.recording_id for r in store.search(CallQuery(**kw))}  # type: ignore[union-attr]

    assert ids() == {1, 2, 3, 6}
    assert ids(agent="1002") == {2, 3, 6}
    assert ids(campaign="SALES") == {1, 6}
    assert ids(carrier="telco_west") == {3}
    assert ids(direction="inbound") == {2}
    assert ids(agent="1002", direction="outbound", campaign="SALES") == {6}
    rows = store.search(CallQuery(agent="1001"))
    assert rows[0].campaign == "SALES" and rows[0].carrier == "telco_east" and rows[0].direction == "outbound"
    # listed by when the call happened (the dialer's start time), newest first
    assert [store.get(r.id).context.recording_id for r in store.search(CallQuery())] == [6, 3, 2, 1]  # type: ignore[union-attr]


def test_second_sync_analyses_nothing_and_a_changed_file_is_analysed_again(
    tmp_path: Path, dialer: str, web: tuple[str, Path], mariadb: Any
) -> None:
    url, rec = web
    settings = _settings(tmp_path, dialer, url)
    first = run_sync(settings, SyncOptions(campaigns=("SUPPORT",)), 1)
    assert (first.rows, first.analysed, len(first.failures)) == (2, 1, 1)
    again = run_sync(settings, SyncOptions(campaigns=("SUPPORT",)), 1)
    assert (again.rows, again.analysed, again.unchanged, again.failures) == (2, 0, 2, [])
    before = _report(settings, 2)
    # the compression cron turns call 2 into MP3/-all.mp3 and rewrites location
    c = BY_ID[2]
    wav, mp3 = rec / f"{c['name']}-all.wav", rec / "MP3" / f"{c['name']}-all.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-codec:a", "libmp3lame", "-b:a",
                    "16k", str(mp3)], check=True, timeout=60)  # fmt: skip
    db = vd.parse_dsn(dialer).database
    with mariadb.cursor() as cur:
        cur.execute(f"UPDATE {db}.recording_log SET location = %s WHERE recording_id = 2",
                    (WEB + f"MP3/{c['name']}-all.mp3",))  # fmt: skip
    moved = wav.rename(wav.with_suffix(".bak"))
    try:
        third = run_sync(settings, SyncOptions(campaigns=("SUPPORT",)), 1)
    finally:
        moved.rename(wav)
        mp3.unlink()
        with mariadb.cursor() as cur:
            cur.execute(f"UPDATE {db}.recording_log SET location = %s WHERE recording_id = 2", (c["location"],))
    assert (third.analysed, third.unchanged, third.failures) == (1, 1, [])
    after = _report(settings, 2)
    assert after.id == before.id and after.legs[0].source.endswith("-all.mp3") and after.cache_key != before.cache_key
    assert len(Store(settings.db).search(CallQuery())) == 1  # replaced, not added


def test_filters_and_since_read_the_rows_asked_for(tmp_path: Path, dialer: str, web: tuple[str, Path]) -> None:
    settings = _settings(tmp_path, dialer, web[0])
    rows = vd.read_calls(vd.connect(vd.parse_dsn(dialer), 5), vd.RowFilter(agents=("1001",),
                                                                           since=datetime(2000, 1, 1)))  # fmt: skip
    assert [r.recording_id for r in rows] == [1, 4, 5, 8]
    old = run_sync(settings, SyncOptions(since=datetime.fromtimestamp(BY_ID[8]["start"] - 60),
                                         until=datetime.fromtimestamp(BY_ID[8]["start"] + 60)), 1)  # fmt: skip
    assert (old.rows, old.analysed) == (1, 1) and _report(settings, 8).context.agent == "1001"


def test_bad_credentials_and_refused_hosts_are_clear_errors(tmp_path: Path, dialer: str,
                                                            web: tuple[str, Path]) -> None:  # fmt: skip
    parts = vd.parse_dsn(dialer)
    wrong = dialer.replace(f":{dialer.split(':')[2].split('@')[0]}@", ":nope@")
    with pytest.raises(InputError, match=f"cannot read the ViciDial database .* as {parts.user}") as info:
        run_sync(_settings(tmp_path, wrong, web[0]), SyncOptions(), 1)
    assert parts.password not in str(info.value)
    # locations on the dialer's own address are only fetched from allowed hosts
    templated = _settings(tmp_path, dialer, "http://{server_ip}/RECORDINGS")
    result = run_sync(templated, SyncOptions(agents=("1002",)), 1)
    assert result.analysed == 0 and {r for r, _ in result.failures} == {2, 3, 6}
    assert all("not an allowed recording host" in why for _, why in result.failures)


def test_recordings_dir_reads_the_done_folder(tmp_path: Path, dialer: str, web: tuple[str, Path]) -> None:
    settings = _settings(tmp_path, dialer, "unused").model_copy()
    settings = settings.model_copy(update={"vicidial": settings.vicidial.model_copy(
        update={"recordings_dir": web[1]})})  # fmt: skip
    result = run_sync(settings, SyncOptions(agents=("1002",)), 2)
    assert (result.analysed, result.failures) == (3, [])
    assert _report(settings, 6).context.files == "legs" and _report(settings, 6).legs[0].source.startswith(
        str(web[1]))  # fmt: skip


def test_one_row_by_id_and_the_mixed_file_when_legs_are_not_wanted(tmp_path: Path, dialer: str,
                                                                    web: tuple[str, Path]) -> None:  # fmt: skip
    settings = _settings(tmp_path, dialer, web[0], use_legs=False, agents=["1002"])
    report, cached = analyze_recording_id(1, settings)  # the configured agent filter is for syncs, not ids
    assert not cached and report.context.files == "mixed" and report.legs[0].source.endswith("-all.wav")
    assert report.context.agent == "1001" and "mixed_legs" in {f.code for f in report.findings}
    with pytest.raises(InputError, match="no finished ViciDial recording with id 7"):
        analyze_recording_id(7, settings)  # still being recorded


def test_ask_tools_filter_and_count_by_call_center_fields(synced: tuple[Settings, Any]) -> None:
    settings, _ = synced
    store = Store(settings.db)
    found, cited = run_tool(store, "search_calls", {"agent": "1002", "direction": "outbound"})
    assert {c["campaign"] for c in found["calls"]} == {"SALES", "RENEW"} and len(cited) == 2
    counted, _ = run_tool(store, "count_calls", {"group_by": "carrier"})
    assert {g["key"]: g["calls"] for g in counted["groups"]} == {"telco_east": 2, "telco_west": 1, "unknown": 1}
    bad, _ = run_tool(store, "search_calls", {"direction": "sideways"})
    assert "invalid arguments" in bad["error"]


# --- the command line and the service --------------------------------------------------------------------------


def _cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALLQA_DB": str(db), "CALLQA_ANALYSIS__NISQA": "false", "CALLQA_ANALYSIS__DNSMOS": "false",
           "COLUMNS": "200"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "callqa.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)  # fmt: skip


def test_cli_sync_then_list_by_agent_with_context(tmp_path: Path, dialer: str, web: tuple[str, Path]) -> None:
    db = tmp_path / "s.db"
    proc = _cli("vicidial", "sync", "--dsn", dialer, "--recordings-url", web[0], "--campaign", "SALES",
                "--jobs", "2", db=db)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3 recordings read: 2 analysed, 0 unchanged, 1 failed" in proc.stderr
    assert "recording 4: no recording file found" in proc.stderr
    again = _cli("vicidial", "sync", "--dsn", dialer, "--recordings-url", web[0], "--campaign", "SALES", db=db)
    assert "3 recordings read: 0 analysed, 3 unchanged" in again.stderr
    listed = json.loads(_cli("list", "--json", "--agent", "1002", db=db).stdout)
    assert [c["context"]["recording_id"] for c in listed] == [6]
    assert listed[0]["context"]["campaign_name"] == "Spring Sales" and listed[0]["context"]["carrier"] == "telco_east"
    text = _cli("list", "--direction", "outbound", db=db).stdout
    assert "1001" in text and "1002" in text and "SALES" in text
    bad = _cli("vicidial", "sync", "--dsn", "postgres://u:p@h/db", db=db)
    assert bad.returncode == 2 and "mysql://" in bad.stderr


def test_service_analyses_by_recording_id_syncs_on_schedule_and_filters(tmp_path: Path, dialer: str,
                                                                       web: tuple[str, Path]) -> None:  # fmt: skip
    settings = _settings(tmp_path, dialer, web[0], sync_interval_s=1.0, agents=["1002"])
    keys = KeyStore(Store(settings.db))
    write = {"Authorization": f"Bearer {keys.create('write')}"}
    with TestClient(create_app(settings, provider=None)) as client:
        resp = client.post("/analyze?wait=120", data={"vicidial_recording_id": "1"}, headers=write)
        assert resp.status_code == 200, resp.text
        assert resp.json()["context"]["agent"] == "1001" and resp.json()["context"]["files"] == "legs"
        audio = client.get(f"/calls/{resp.json()['id']}/audio/agent", headers=write)  # kept for listening
        assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
        missing = client.post("/analyze?wait=60", data={"vicidial_recording_id": "4"}, headers=write)
        assert missing.status_code == 422 and "no recording file found" in missing.json()["detail"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the scheduled sync queues agent 1002's three calls
            found = client.get("/calls?agent=1002", headers=write).json()
            if len(found) == 3:
                break
            time.sleep(0.5)
        assert {c["campaign"] for c in found} == {"SUPPORT", "RENEW", "SALES"}
        assert [c["direction"] for c in client.get("/calls?carrier=telco_west", headers=write).json()] == ["outbound"]
        assert len(client.get("/calls?direction=outbound", headers=write).json()) == 3
    none = _settings(tmp_path / "x", dialer, web[0]).model_copy(update={"vicidial": VicidialSettings()})
    with TestClient(create_app(none, provider=None)) as client:
        token = {"Authorization": f"Bearer {KeyStore(Store(none.db)).create('write')}"}
        resp = client.post("/analyze", data={"vicidial_recording_id": "1"}, headers=token)
        assert resp.status_code == 409 and "CALLQA_VICIDIAL__DSN" in resp.json()["detail"]


# --- pure parts -----------------------------------------------------------------------------------------------


def test_dsn_parsing_and_errors_never_show_the_password() -> None:
    d = vd.parse_dsn("mysql://cron:p%40ss%3Aword@10.0.0.5:3307/asterisk")
    assert (d.user, d.password, d.host, d.port, d.database) == ("cron", "p@ss:word", "10.0.0.5", 3307, "asterisk")
    assert d.dialer == "10.0.0.5:3307/asterisk" and vd.parse_dsn("mysql://u@h/db").port == 3306
    for bad in ("postgres://u:secretpw@h/db", "mysql://u:secretpw@h", "mysql://h/db", "mysql://u:secretpw@h:99999/d"):
        with pytest.raises(InputError) as info:
            vd.parse_dsn(bad)
        assert "secretpw" not in str(info.value)


def test_carrier_location_candidates_roles_and_masking() -> None:
    assert vd.carrier_name("SIP/telco_east-0000a1b2") == "telco_east"
    assert vd.carrier_name("PJSIP/my-carrier-00000c3d") == "my-carrier"
    assert vd.carrier_name("IAX2/backup-1234") == "backup"
    assert vd.carrier_name("Local/58600051@default-00000001;1") == "" and vd.carrier_name("") == ""
    assert vd.location_path("http://10.0.0.5/RECORDINGS/MP3/X-all.mp3") == "MP3/X-all.mp3"
    assert vd.location_path("https://dialer/RECORDINGS/X-all.wav") == "X-all.wav"
    assert vd.location_path("http://10.0.0.5/RECORDINGS/../../etc/passwd") == ""
    assert vd.location_path("") == "" and vd.location_path("http://x/other/X.wav") == ""
    call = vd.VicidialCall.from_row((5, "", "10.0.0.5", None, None, 41, "X", "http://a/RECORDINGS/MP3/X-all.mp3",
                                     None, "1001", "") + (None,) * 22)  # fmt: skip
    cands = vd.candidates(call, "http://h/RECORDINGS")
    assert [(c.files, c.refs) for c in cands] == [
        ("legs", ("http://h/RECORDINGS/ORIG/X-in.wav", "http://h/RECORDINGS/ORIG/X-out.wav")),
        ("mixed", ("http://h/RECORDINGS/MP3/X-all.mp3",)),
        ("mixed", ("http://h/RECORDINGS/X-all.wav",)),
    ]
    assert call.direction is None and call.context(2, None).customer_number == ""
    with pytest.raises(InputError, match="unusable file name"):
        vd.candidates(vd.VicidialCall.from_row((6, "", "", None, None, 1, "../x", "", None, "", "") + (None,) * 22),
                      "/srv")  # fmt: skip
    assert vd.leg_roles(VicidialSettings()) == ["customer", "agent"]
    assert vd.leg_roles(VicidialSettings(in_leg="agent")) == ["agent", "customer"]
    assert mask_number("+1 (312) 555-0147") == "*********47" and mask_number("1234") == "****"
    assert vd.masked("http://h/RECORDINGS/20240101-101010_3125550147-all.wav", "3125550147", 2).endswith(
        "_********47-all.wav")  # fmt: skip


def test_old_store_gets_the_filter_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript("""CREATE TABLE reports (id TEXT PRIMARY KEY, cache_key TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL, source TEXT NOT NULL, verdict TEXT NOT NULL, duration_s REAL NOT NULL,
            report TEXT NOT NULL);""")  # fmt: skip
        db.execute("INSERT INTO reports VALUES ('abc123', 'k', 1.0, 'a.wav', 'good', 3.0, '{}')")
    store = Store(path)
    with sqlite3.connect(path) as db:
        cols = {r[1] for r in db.execute("PRAGMA table_info(reports)")}
    assert {"agent", "campaign", "carrier", "direction", "started_at"} <= cols
    assert [r.id for r in store.search(CallQuery())] == ["abc123"]
    assert store.search(CallQuery(agent="1001")) == [] and store.list()[0].context is None
    Store(path)  # opening it again adds nothing and fails on nothing
