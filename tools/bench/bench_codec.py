"""Record codec benchmark: bytes per 1 Hz position fix, side by side with raw NMEA, CSV (+gzip) and
Teltonika Codec 8.

Drives (each fix becomes a `pos` record with every field of docs/architecture.md):
- sim-<scenario>: tools/sim drives (u-blox style NMEA: 1e-5 arc-minute, 0.001 kn, 0.01 deg, Gauss-Markov
  receiver error), parsed back from the trace's NMEA (RMC + GGA); t_ms = arrival of the epoch's GGA;
- synth-<seed>: tests/mp/drive_gen.py (independent receiver model, 0-25 ms fix arrival jitter);
- real-nmea1: ../shared/data/nmea/aerorust/nmea1.log when present (a real receiver: 0.1 kn / 0.1 deg
  resolution; an aircraft landing and taxiing, not a car: shown for honesty, not in the average).

Figures: codec bytes/fix at 512-byte blocks (lossless), with speed/course quantised to 0.1 m/s and
1 degree (positions still lossless at 1e-7 deg), in bounded-error mode (5 m), (the box default: header + CRC
amortised) and at 4096-byte blocks; the part of it spent on lat/lon; raw NMEA (the RMC + GGA sentences of the
fix); CSV of the record fields, plain and gzip -9 over the whole drive; Codec 8: one AVL record (8 timestamp +
1 priority + 15 GPS element + 6 IO header bytes with no IO elements = 30 bytes, the minimum) plus the AVL
packet overhead
(4 preamble + 4 length + 1 codec id + 1 + 1 record counts + 4 CRC = 15 bytes) amortised over 10 records.
"""
import gzip
import io
import math
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.join(ROOT, "tests", "mp") not in sys.path:
    sys.path.append(os.path.join(ROOT, "tests", "mp"))

from firmware import codec, decoder, rangecoder  # noqa: E402

FIELDS = ("seq", "t_ms", "utc_s", "lat_e7", "lon_e7", "speed_mmps", "course_cdeg", "hdop_x10", "sats")
CODEC8_RECORD = 8 + 1 + 15 + 6
CODEC8_PACKET = 4 + 4 + 1 + 1 + 1 + 4
CODEC8_PER_PACKET = 10
UTC2000 = 946684800


def _dm(v, h):
    x = float(v)
    d = int(x / 100)
    deg = d + (x - d * 100) / 60.0
    return -deg if h in ("S", "W") else deg


def parse_nmea(lines_with_t):
    """[(t_ms, sentence str)] -> (pos records, raw RMC+GGA bytes). Valid fixes only."""
    recs = []
    raw = 0
    gga = {}
    pend = {}
    for t_ms, line in lines_with_t:
        body = line.strip().split("*")[0]
        p = body.split(",")
        if len(p) < 10:
            continue
        tag = p[0][-3:]
        if tag == "GGA" and p[2]:
            gga[p[1]] = (int(p[7] or -1), int(round(float(p[8]) * 10)) if p[8] else -1, len(line.strip()) + 2,
                         t_ms)
        elif tag == "RMC" and p[2] == "A" and p[3] and p[5]:
            pend[p[1]] = (p, len(line.strip()) + 2, t_ms)
        # a fix is complete when both sentences of the epoch are in
        for key in list(pend.keys()):
            if key in gga:
                rp, rlen, rt = pend.pop(key)
                sats, hd, glen, gt = gga.pop(key)
                hh, mi, ss = int(key[0:2]), int(key[2:4]), float(key[4:] or 0)
                dd = rp[9]
                if len(dd) == 6:
                    import calendar

                    utc = calendar.timegm((2000 + int(dd[4:6]), int(dd[2:4]), int(dd[0:2]), hh, mi, int(ss),
                                           0, 0, 0))
                    utc -= UTC2000
                else:
                    utc = -1
                recs.append({"type": "pos", "t_ms": max(rt, gt), "utc_s": utc,
                             "lat_e7": int(round(_dm(rp[3], rp[4]) * 1e7)),
                             "lon_e7": int(round(_dm(rp[5], rp[6]) * 1e7)),
                             "speed_mmps": int(round(float(rp[7] or 0) * 514.444)),
                             "course_cdeg": (int(round(float(rp[8]) * 100)) % 36000) if rp[8] else -1,
                             "hdop_x10": hd, "sats": sats})
                raw += rlen + glen
    return recs, raw


def sim_drive(scenario, seed, duration_s):
    from hw.trace_format import read_trace
    from tools.sim.engine import simulate

    fd, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    try:
        simulate(path, scenario, seed=seed, duration_s=duration_s)
        header, lines = read_trace(path)
    finally:
        os.remove(path)
    out = []
    buf = ""
    for ln in lines:
        if ln.get("s") != "gnss" or "d" not in ln:
            continue
        buf += ln["d"]
        while "\n" in buf:
            s, buf = buf.split("\n", 1)
            out.append((int(round(ln["t"] * 1000)), s))
    return parse_nmea(out)


def synth_drive(seed, seconds):
    import drive_gen

    recs = [r for r in drive_gen.drive(seed, seconds) if r["type"] == "pos"]
    raw = 0
    for r in recs:
        raw += len(_rmc_gga(r))
    return recs, raw


def _rmc_gga(r):
    # the u-blox style sentences (tools/sim/nmea_gen when available) carrying this fix
    try:
        from tools.sim import nmea_gen
    except ImportError:  # pragma: no cover
        return b"x" * 150
    fix = {"lat": r["lat_e7"] / 1e7, "lon": r["lon_e7"] / 1e7, "alt_m": 520.0,
           "speed_mps": r["speed_mmps"] / 1000.0, "course_deg": r["course_cdeg"] / 100.0,
           "hdop": r["hdop_x10"] / 10.0, "sats": r["sats"], "quality": 1}
    allb = nmea_gen.epoch("GN", (2026, 11, 23, 8, 0, 0.0), fix)
    return b"".join(s + b"\r\n" for s in allb.split(b"\r\n") if b"RMC" in s or b"GGA" in s)


def real_drive():
    path = os.path.join(os.path.dirname(ROOT), "shared", "data", "nmea", "aerorust", "nmea1.log")
    if not os.path.exists(path):
        return None
    out = []
    with open(path, "r", errors="replace") as f:
        for i, line in enumerate(f):
            out.append((i * 50, line))
    recs, raw = parse_nmea(out)
    # one epoch per second on the box clock
    for i, r in enumerate(recs):
        r["t_ms"] = 1000 * i + 120
    return recs, raw


def encode(recs, max_bytes, **kw):
    seq = 1000
    for r in recs:
        r["seq"] = seq
        seq += 1
    from testbed.blocks import encode_blocks

    blocks = [b[0] for b in encode_blocks(codec.BlockEncoder("box-00000001", 12, max_bytes=max_bytes, **kw),
                                          recs)]
    out = []
    for b in blocks:
        out.extend(decoder.decode_block(b)[1])
    if not kw and out != recs:
        raise AssertionError("codec round trip differs")
    return sum(len(b) for b in blocks), len(out)


def position_bits(recs):
    """Bits spent on lat/lon residuals (instrumented encode at 4096-byte blocks). The range coder's cost
    of a symbol is 8 * (bytes shifted out) + log2(range before / range after)."""
    cost = [0.0]
    orig = rangecoder.RangeEncoder.uint
    lat_ctxs = tuple(range(codec._C_PX + 4, codec._C_PX + 8))  # lat, lon: two contexts each

    def counting(w, c, u):
        n0, r0 = w.n, w.range
        orig(w, c, u)
        if c in lat_ctxs:
            cost[0] += 8 * (w.n - n0) + math.log2(r0) - math.log2(w.range)

    rangecoder.RangeEncoder.uint = counting
    try:
        encode(recs, 4096)
    finally:
        rangecoder.RangeEncoder.uint = orig
    return cost[0]


def csv_sizes(recs):
    s = io.StringIO()
    s.write(",".join(FIELDS) + "\n")
    for r in recs:
        s.write(",".join(str(r[k]) for k in FIELDS) + "\n")
    data = s.getvalue().encode()
    return len(data), len(gzip.compress(data, 9))


def measure(name, recs, raw):
    n = len(recs)
    b512, _ = encode(recs, 512)
    b4k, _ = encode(recs, 4096)
    csv, csvgz = csv_sizes(recs)
    thin, kept = encode([dict(r) for r in recs], 512, tolerance_m=5)
    quant, _ = encode([dict(r) for r in recs], 512, speed_q_mmps=100, course_q_cdeg=100)
    return {"fixes": n, "codec512": b512 / n, "quant": quant / n, "codec4k": b4k / n,
            "pos_bits": position_bits(recs) / n,
            "nmea": raw / n, "csv": csv / n, "csvgz": csvgz / n, "thin5m": thin / n, "thin5m_kept": kept / n}


_SPEED_SCRIPT = """
import time, gc
from firmware import codec, decoder
import drive_gen
recs = [r for r in drive_gen.drive(1, %d) if r['type'] == 'pos']
for i, r in enumerate(recs):
    r['seq'] = i
enc = codec.BlockEncoder('box-0001', 1)
blocks = []
gc.collect()
t0 = time.ticks_us()
for r in recs:
    if not enc.add(r):
        blocks.append(enc.finish())
        enc.add(r)
t1 = time.ticks_us()
blocks.append(enc.finish())
t2 = time.ticks_us()
for b in blocks:
    decoder.decode_block(b)
t3 = time.ticks_us()
print('SPEED', time.ticks_diff(t1, t0) // len(recs), time.ticks_diff(t3, t2) // len(recs))
"""


def mp_speed(seconds):
    """(encode, decode) microseconds per fix under the MicroPython unix VM (host CPU)."""
    import subprocess

    from tools.mpvm import micropython_binary

    exe = micropython_binary()
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "tests", "mp"), ROOT]))
    p = subprocess.run([exe, "-X", "heapsize=32M", "-c", _SPEED_SCRIPT % seconds], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    for ln in p.stdout.splitlines():
        if ln.startswith("SPEED "):
            a, b = ln.split()[1:3]
            return int(a), int(b)
    return None


def run(quick=False):
    drives = []
    dur = 600 if quick else 1800
    for sc, seed in (("commute", 1), ("highway", 2), ("urban_canyon", 3)):
        try:
            recs, raw = sim_drive(sc, seed, dur)
        except ImportError:
            continue
        if recs:
            drives.append(("sim-" + sc, recs, raw))
    for seed in (1, 2):
        recs, raw = synth_drive(seed, dur)
        drives.append(("synth-%d" % seed, recs, raw))
    res = {}
    rows = {}
    for name, recs, raw in drives:
        rows[name] = measure(name, recs, raw)
    real = real_drive()
    if real and real[0]:
        rows["real-nmea1"] = measure("real-nmea1", real[0], real[1])
    cars = [k for k in rows if not k.startswith("real")]
    tot_fix = sum(rows[k]["fixes"] for k in cars)

    def avg(field):
        return sum(rows[k][field] * rows[k]["fixes"] for k in cars) / tot_fix

    res["codec bytes/fix (512 B blocks, all drives)"] = round(avg("codec512"), 2)
    res["codec bytes/fix (4096 B blocks)"] = round(avg("codec4k"), 2)
    res["codec lat+lon bits/fix"] = round(avg("pos_bits"), 1)
    res["codec bytes/fix, speed 0.1 m/s + course 1 deg steps (positions lossless)"] = round(avg("quant"), 2)
    res["codec bytes/fix, bounded error 5 m"] = round(avg("thin5m"), 2)
    res["bounded error 5 m: fixes kept (fraction)"] = round(avg("thin5m_kept"), 3)
    res["raw NMEA RMC+GGA bytes/fix"] = round(avg("nmea"), 1)
    res["CSV bytes/fix"] = round(avg("csv"), 1)
    res["CSV+gzip -9 bytes/fix (whole drive)"] = round(avg("csvgz"), 2)
    res["Teltonika Codec 8 bytes/fix (min, no IO)"] = round(CODEC8_RECORD + CODEC8_PACKET / CODEC8_PER_PACKET,
                                                            1)
    res["fixes measured"] = tot_fix
    sp = mp_speed(300 if quick else 1800)
    if sp:
        res["encode us/fix (MicroPython unix VM, host CPU)"] = sp[0]
        res["decode us/fix (MicroPython unix VM, host CPU)"] = sp[1]
    for k in rows:
        res["%s codec bytes/fix (512 B)" % k] = round(rows[k]["codec512"], 2)
        res["%s lat+lon bits/fix" % k] = round(rows[k]["pos_bits"], 1)
        res["%s codec bytes/fix, quantised speed/course" % k] = round(rows[k]["quant"], 2)
    return res


def main():
    quick = "--quick" in sys.argv
    for k, v in run(quick).items():
        print("%-55s %s" % (k, v))


if __name__ == "__main__":
    main()
