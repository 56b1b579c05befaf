"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser that reads untrusted bytes, bounded for CI.

Each target of ``fuzz/targets.py`` runs a fixed number of inputs from a fixed seed, so that CI is reproducible;
a crash (any exception other than callqa's typed errors) fails the test with libFuzzer's report and the input.
Longer runs are for developers: ``python fuzz/targets.py sip -max_total_time=600``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("atheris")
RUNS = int(os.environ.get("CALLQA_ATHERIS_RUNS", "4000"))
TARGETS = ("sip", "sdp", "rtp", "rtcp", "hep", "ethernet", "sll", "tcp_sip", "srtp", "pcap", "wav")


@pytest.mark.parametrize("target", TARGETS)
def test_parser_survives_coverage_guided_fuzzing(target: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, str(REPO / "fuzz" / "targets.py"), target, f"-runs={RUNS}", "-seed=1",
                          "-rss_limit_mb=1024", "-timeout=10"],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    report = out.stderr[-3000:]
    assert out.returncode == 0, report
    assert f"Done {RUNS} runs" in out.stderr, report
