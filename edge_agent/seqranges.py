"""Sequence-number ranges of the end-to-end contract (docs/mqtt-topics.md): inclusive [lo, hi] pairs."""


def subtract(lo, hi, spans):
    """The parts of lo..hi not covered by spans [(a, b), ...] sorted by a, as [(lo, hi), ...]."""
    out = []
    cur = lo
    for a, b in spans:
        if b < cur:
            continue
        if a > hi:
            break
        if a > cur:
            out.append((cur, a - 1))
        cur = max(cur, b + 1)
        if cur > hi:
            break
    if cur <= hi:
        out.append((cur, hi))
    return out
