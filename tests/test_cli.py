"""The command line end to end, as a user runs it (a subprocess, real files, a real store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import calls
import captures
import numpy as np
import pytest
from conftest import REPO, write_wav

from callqa.report import SCHEMA_VERSION


def callqa(*args: str, db: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALLQA_DB": str(db), "CALLQA_MODELS_DIR": str(db.parent / "models"), "COLUMNS": "200"}
    if "--nisqa-weights" not in args:
        env["CALLQA_ANALYSIS__NISQA"] = "false"  # keep the report independent of weights a machine may have
    proc = subprocess.run([sys.executable, "-m", "callqa.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_analyze_example_prints_summary_and_json(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    legs = [str(REPO / "examples/call-agent.wav"), str(REPO / "examples/call-customer.wav")]
    text = callqa("analyze", *legs, db=db).stdout
    assert "DEGRADED" in text and "dead_air" in text and "agent" in text
    report = json.loads(callqa("analyze", "--json", *legs, db=db).stdout)
    assert report["verdict"] == "degraded" and [leg["role"] for leg in report["legs"]] == ["agent", "customer"]
    for leg in report["legs"]:
        assert set(leg["levels"]) >= {"rms_dbfs", "peak_dbfs", "clipping_ratio"}
        assert set(leg["mos"]["dnsmos"]) >= {"sig", "bak", "ovrl", "p808"}
        assert leg["mos"]["nisqa"] is None and "nisqa" in leg["mos"]["skipped"]
    shown = json.loads(callqa("show", report["id"], "--json", db=db).stdout)
    assert shown == report
    assert report["id"] in callqa("list", db=db).stdout


def test_schema_validates_a_report(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(callqa("schema", db=tmp_path / "s.db").stdout)
    assert schema["x-schema-version"] == SCHEMA_VERSION
    report = json.loads(callqa("analyze", "--json", str(REPO / "examples/call-agent.wav"), db=tmp_path / "s.db").stdout)
    jsonschema.validate(report, schema)


def test_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    proc = callqa("analyze", str(tmp_path / "missing.wav"), db=tmp_path / "s.db", check=False)
    assert proc.returncode == 2 and "file not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = callqa("show", "nosuchid", db=tmp_path / "s.db", check=False)
    assert proc.returncode == 2 and "no stored report" in proc.stderr


def test_batch_carries_on_past_bad_files_and_resumes(tmp_path: Path) -> None:
    rec = tmp_path / "recordings"
    rec.mkdir()
    a, b = calls.conversation(20.0)
    write_wav(rec / "1001-in.wav", calls.leg(20, a), calls.RATE)
    write_wav(rec / "1001-out.wav", calls.leg(20, b, seed=1), calls.RATE)
    write_wav(rec / "1002.wav", np.vstack([calls.leg(20, a), calls.leg(20, b)]), calls.RATE)
    write_wav(rec / "1003.wav", calls.leg(10, [1.0]), calls.RATE)
    (rec / "1004.wav").write_bytes(b"garbage" * 100)
    (rec / "1005.mp3").write_bytes(b"")
    out = tmp_path / "results.jsonl"
    db = tmp_path / "s.db"
    proc = callqa("analyze", "--dir", str(rec), "--jobs", "2", "--out", str(out), db=db)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3, proc.stderr
    assert sorted(len(r["legs"]) for r in lines) == [1, 2, 2]
    assert "3 of 5 calls analysed, 2 failed" in proc.stderr
    assert "1004.wav" in proc.stderr and "1005.mp3" in proc.stderr
    # resume: finished calls are not analysed or written again
    callqa("analyze", "--dir", str(rec), "--jobs", "2", "--out", str(out), db=db)
    assert len(out.read_text().splitlines()) == 3
    # the same stereo audio under another name is a cache hit that names the new file, and is resumed as such
    (rec / "1006.wav").write_bytes((rec / "1002.wav").read_bytes())
    for _ in range(2):
        proc = callqa("analyze", "--dir", str(rec), "--jobs", "2", "--out", str(out), db=db)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and len({r["input"] for r in lines}) == 4, proc.stderr
    copy = next(r for r in lines if r["input"].endswith("1006.wav"))
    assert {Path(leg["source"]).name for leg in copy["legs"]} == {"1006.wav"}
    assert "4 of 6 calls analysed (4 already in" in proc.stderr


def test_batch_of_only_bad_files_fails(tmp_path: Path) -> None:
    rec = tmp_path / "bad"
    rec.mkdir()
    (rec / "x.wav").write_bytes(b"not audio")
    proc = callqa("analyze", "--dir", str(rec), db=tmp_path / "s.db", check=False)
    assert proc.returncode == 1 and "0 of 1 calls analysed" in proc.stderr


def test_nisqa_weights_option_adds_nisqa(tmp_path: Path, nisqa_weights: Path) -> None:
    proc = callqa("analyze", "--json", "--nisqa-weights", str(nisqa_weights),
                  str(REPO / "examples/call-agent.wav"), str(REPO / "examples/call-customer.wav"),
                  db=tmp_path / "s.db")  # fmt: skip
    report = json.loads(proc.stdout)
    for leg in report["legs"]:
        nq = leg["mos"]["nisqa"]
        assert set(nq) >= {"mos", "noisiness", "coloration", "discontinuity", "loudness"}
        assert 1.0 < nq["mos"] < 5.0
    assert report["models"]["nisqa"].startswith("NISQA_DIM v2")


def test_pcap_nat_aliases_from_the_setting_and_the_option(tmp_path: Path) -> None:
    call = captures.Call("nat-1", caller="10.33.6.101", callee="10.33.6.100", caller_frames=captures.silence(1),
                         callee_frames=captures.silence(1))  # fmt: skip
    capture = str(captures.write(tmp_path / "nat.pcap", call.packets()))

    def matched_by(*extra: str, env: dict[str, str] | None = None) -> str:
        os.environ.update(env or {})
        try:
            out = callqa("pcap", "--stats-only", "--jsonl", "--no-cache", *extra, capture, db=tmp_path / "s.db").stdout
        finally:
            for k in env or {}:
                os.environ.pop(k)
        return json.loads(out)["sip"]["matched_by"]

    assert matched_by() == "sdp"
    # the SDP names 10.33.6.100: aliasing it to another address leaves only the port to match on (NAT)
    assert matched_by(env={"CALLQA_NAT_ALIASES": '{"10.33.6.100": "203.0.113.9"}'}) == "sdp port (NAT)"
    assert matched_by("--nat-alias", "10.33.6.100=203.0.113.9") == "sdp port (NAT)"
    bad = callqa("pcap", "--nat-alias", "10.33.6.100", capture, db=tmp_path / "s.db", check=False)
    assert bad.returncode == 2 and "PRIVATE=PUBLIC" in bad.stderr


def test_pcap_json_is_one_document_and_jsonl_one_line_per_call(tmp_path: Path) -> None:
    first = captures.Call("one", callee_frames=captures.silence(1), seed=1)
    second = captures.Call("two", start=first.start + 3, callee_frames=captures.silence(1), seed=2)
    capture = str(captures.write(tmp_path / "two.pcap", first.packets() + second.packets()))  # two calls
    reports = json.loads(callqa("pcap", "--stats-only", "--json", capture, db=tmp_path / "s.db").stdout)
    assert isinstance(reports, list) and len(reports) == 2
    lines = callqa("pcap", "--stats-only", "--jsonl", capture, db=tmp_path / "s.db").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [r["id"] for r in reports]


def test_text_report_is_plain_and_not_cut_when_piped(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    long_dir = tmp_path / ("a-folder-with-a-rather-long-name-" * 3)
    long_dir.mkdir()
    name = "customer-recording-with-a-long-descriptive-file-name.wav"
    (long_dir / name).write_bytes((REPO / "examples/call-customer.wav").read_bytes())
    proc = subprocess.run([sys.executable, "-m", "callqa.cli", "analyze", str(long_dir / name)], env={
        **env, "CALLQA_DB": str(tmp_path / "s.db"), "CALLQA_ANALYSIS__NISQA": "false"}, capture_output=True,
        text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout  # whole, not wrapped at 80 columns
    # a mono file: the mixed-recording advice is given once, in plain words, with what to check
    assert proc.stdout.count("record the legs separately") == 1
    assert "Both sides are mixed in one channel" in proc.stdout and "Check:" in proc.stdout
    assert "NISQA dimensions" not in proc.stdout  # NISQA did not run: its dimensions are not advice
    # DTMF-only capture: the digits are listed, and no empty leg table is printed
    a, b = ("192.168.0.3", 49176), ("192.168.0.1", 10000)
    pound = tmp_path / "pound.pcap"
    captures.write(pound, captures.Stream(a, b, captures.silence(0.2), dtmf=[(0, "#", 10)]).packets())
    dtmf = callqa("pcap", str(pound), db=tmp_path / "s.db").stdout
    assert "DTMF #" in dtmf and "RMS dBFS" not in dtmf
    # a sequence restart is not shown as negative loss
    restarted = captures.Stream(a, b, captures.silence(4), restart_at=100).packets()
    restart_pcap = captures.write(tmp_path / "restart.pcap", restarted)
    restart = callqa("pcap", "--stats-only", str(restart_pcap), db=tmp_path / "s.db")
    assert "lost -" not in restart.stdout and "sequence restart" in restart.stdout
