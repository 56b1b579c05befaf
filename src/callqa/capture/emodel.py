"""Network MOS from the ITU-T G.107 E-model, after a jitter-buffer simulation (as VoIPmonitor reports it).

The jitter buffer plays packet i at ``first_arrival + (ts_i - ts_0) / clock + depth``; a packet that arrives
after its playout time is discarded like a lost one. Effective loss feeds the equipment impairment
Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl) (G.107 7.2, random loss), the delay impairment Id uses the
simplified form of Cole & Rosenbluth (2001) for the one-way delay, and R = 93.2 - Id - Ie,eff.
"""

from __future__ import annotations

from collections.abc import Sequence

# codec -> (Ie, Bpl) from ITU-T G.113 Appendix I (Bpl with packet loss concealment)
CODEC_IMPAIRMENT = {"PCMU": (0.0, 25.1), "PCMA": (0.0, 25.1), "G722": (0.0, 25.1), "G729": (11.0, 19.0),
                    "G723": (15.0, 16.1), "GSM": (20.0, 10.0), "OPUS": (0.0, 25.1), "ILBC": (11.0, 32.0)}  # fmt: skip
R0 = 93.2


def jitter_buffer_loss(arrivals_s: Sequence[float], timestamps: Sequence[int], clock: int, depth_ms: float) -> int:
    """Packets a fixed jitter buffer of ``depth_ms`` would discard as late (ordered by arrival)."""
    if not arrivals_s or not clock:
        return 0
    t0, ts0 = arrivals_s[0], timestamps[0]
    late = 0
    for arrival, ts in zip(arrivals_s, timestamps, strict=True):
        playout = t0 + (ts - ts0) / clock + depth_ms / 1000.0
        if arrival > playout:
            late += 1
    return late


def r_factor(codec: str, loss_ratio: float, delay_ms: float) -> float:
    ie, bpl = CODEC_IMPAIRMENT.get(codec.upper(), (0.0, 25.1))
    ppl = 100.0 * max(0.0, min(1.0, loss_ratio))
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)
    idd = 0.024 * delay_ms + (0.11 * (delay_ms - 177.3) if delay_ms > 177.3 else 0.0)
    return R0 - idd - ie_eff


def mos_from_r(r: float) -> float:
    """G.107 Annex B: R to the estimated conversational MOS."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def network_mos(codec: str, expected: int, lost: int, late: int, ptime_ms: float, depth_ms: float) -> float:
    """MOS for a direction: loss and jitter-buffer discards, and one-way delay = packetisation + buffer."""
    loss = (max(lost, 0) + late) / expected if expected > 0 else 0.0
    return round(mos_from_r(r_factor(codec, loss, ptime_ms + depth_ms)), 2)
