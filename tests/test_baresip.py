"""Real SIP peers end to end: two baresip user agents call each other with G.711 inside a network namespace
the test creates, `callqa sniff` listens on its loopback, and nftables impairs one direction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import calls
import numpy as np
import pytest
from conftest import REPO, write_wav
from sniffing import lines_until, wait_listening

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("baresip", "nft", "ip", "sox")),
    reason="needs root, baresip, nftables, iproute2 and sox (installed by .ci/run)",
)
CALLER_RTP, CALLEE_RTP = "12000-12009", "12010-12019"


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"callqa-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def agent(tmp: Path, who: str, port: int, rtp: str, speech: Path) -> Path:
    d = tmp / who
    d.mkdir()
    (d / "config").write_text("\n".join([
        f"sip_listen 127.0.0.1:{port}", "net_interface 127.0.0.1", f"audio_source aufile,{speech}",
        f"audio_player aufile,{tmp / (who + '-heard.wav')}", f"audio_alert aufile,{tmp / (who + '-alert.wav')}",
        f"rtp_ports {rtp}", "module_path /usr/lib/baresip/modules", "module stdio.so", "module g711.so",
        "module aufile.so", "module_app account.so", "module_app menu.so", "",
    ]))  # fmt: skip
    (d / "accounts").write_text(f"<sip:{who}@127.0.0.1:{port}>;regint=0;answermode=auto;audio_codecs=PCMU\n")
    return d


def call_with_impairment(ns: str, tmp: Path, drop_rule: str | None, drop_after_s: float = 0.0) -> dict:  # type: ignore[type-arg]
    """One call between two baresip agents; ``drop_rule`` (nftables, output hook) applies from the start or from
    ``drop_after_s`` seconds after the caller dials."""
    speech = write_wav(tmp / "speech.wav", np.concatenate(calls.utterances()[:3]), calls.RATE)  # 14.5 s
    caller = agent(tmp, "a", 5080, CALLER_RTP, speech)
    callee = agent(tmp, "b", 5090, CALLEE_RTP, speech)
    run = ["ip", "netns", "exec", ns]
    if drop_rule:
        subprocess.run([*run, "nft", "add", "table", "ip", "imp"], check=True)
        subprocess.run([*run, "nft", "add", "chain", "ip", "imp", "out",
                        "{ type filter hook output priority 0; }"], check=True)  # fmt: skip
    add_rule = [*run, "nft", "add", "rule", "ip", "imp", "out", *(drop_rule or "").split()]
    if drop_rule and not drop_after_s:
        subprocess.run(add_rule, check=True)
    env = {**os.environ, "CALLQA_DB": str(tmp / "s.db")}
    sniff = [sys.executable, "-m", "callqa.cli", "sniff", "-i", "lo", "--bpf", "udp", "--duration", "600",
             "--inactivity", "3", "--jsonl", "--no-nisqa"]  # fmt: skip
    sniffer = subprocess.Popen([*run, *sniff], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=REPO)  # fmt: skip
    wait_listening(sniffer, "packet")
    b = subprocess.Popen([*run, "baresip", "-f", str(callee), "-t", "16"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    wait_listening(b, "udp", 5090)  # the callee takes calls
    timer = threading.Timer(drop_after_s, subprocess.run, [add_rule], {"check": True})
    if drop_rule and drop_after_s:
        timer.start()
    subprocess.run([*run, "baresip", "-f", str(caller), "-e", "/dial sip:b@127.0.0.1:5090", "-t", "10"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)  # fmt: skip
    if timer.is_alive() or timer.finished.is_set():
        timer.join()
    b.wait(timeout=120)
    out, err = lines_until(sniffer, lambda lines: any('"sip":{' in line for line in lines), timeout_s=180)
    assert sniffer.returncode == 0, err
    reports = [json.loads(line) for line in out]
    (report,) = [r for r in reports if r["sip"]]
    return report


def test_loss_on_one_direction_shows_on_that_direction_only(netns: str, tmp_path: Path) -> None:
    # 20% of the packets sent to the caller's RTP ports are dropped: the callee -> caller direction
    report = call_with_impairment(netns, tmp_path, f"udp dport {CALLER_RTP} numgen random mod 100 < 20 drop")
    streams = {s["leg"]: s for s in report["streams"]}
    assert streams["caller"]["lost"] == 0 and streams["caller"]["packets"] > 300
    lossy = streams["callee"]
    assert 0.1 < lossy["lost"] / lossy["expected"] < 0.3
    assert lossy["network_mos"] < streams["caller"]["network_mos"] - 1.0
    codes = {(f["code"], f["leg"]) for f in report["findings"]}
    assert ("packet_loss", "callee") in codes and ("packet_loss", "caller") not in codes
    legs = {leg["role"]: leg for leg in report["legs"]}
    assert legs["caller"]["speech_ratio"] > 0.3 and legs["callee"]["speech_ratio"] > 0.2


def test_blocked_direction_is_one_way_audio(netns: str, tmp_path: Path) -> None:
    report = call_with_impairment(netns, tmp_path, f"udp dport {CALLER_RTP} drop")
    assert {s["leg"] for s in report["streams"]} == {"caller"}
    (one_way,) = [f for f in report["findings"] if f["code"] == "one_way_audio"]
    assert one_way["severity"] == "critical" and one_way["leg"] == "callee"
    assert "network" in one_way["evidence"]["used"] and one_way["evidence"]["network"]["packets"].get("callee") is None
    assert one_way["start_s"] < 3.0  # from the start of the media
    assert report["verdict"] == "failed"


def test_direction_blocked_after_5_s_is_one_way_from_then(netns: str, tmp_path: Path) -> None:
    # the callee -> caller RTP is dropped from 5 s after the caller dials: the caller hears nothing from then on
    report = call_with_impairment(netns, tmp_path, f"udp dport {CALLER_RTP} drop", drop_after_s=5.0)
    streams = {s["leg"]: s for s in report["streams"]}
    assert streams["callee"]["end_s"] < streams["caller"]["end_s"] - 3.0  # the callee's RTP stopped early
    (one_way,) = [f for f in report["findings"] if f["code"] == "one_way_audio"]
    assert one_way["severity"] == "critical" and one_way["leg"] == "callee"
    assert 3.5 <= one_way["start_s"] <= 7.0, one_way
    assert "network" in one_way["evidence"]["used"]
    assert report["verdict"] == "failed"
