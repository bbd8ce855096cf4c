# Deterministic synthetic drive for codec/store tests and benchmarks (runs on MicroPython and CPython).
# Not a simulator of record (tools/sim is): a vehicle with urban/extra-urban speed profile, turns and
# stops, seen through a GNSS receiver model: slowly wandering position error (Gauss-Markov, ~1.5 m,
# tau 60 s) + epoch white noise (3 cm), Doppler speed noise 0.05 m/s, course noise ~0.3 deg at speed,
# static hold when stopped, NMEA resolutions (ddmm.mmmmm, 0.001 kn, 0.01 deg, HDOP 0.01), and the
# box's fix arrival jitter (t_ms). Also a few events / status records.
import math


class LCG:
    def __init__(self, seed):
        self.s = (seed * 2654435761 + 12345) & 0xFFFFFFFF

    def u(self):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s / 2147483648.0

    def g(self):
        # approximately standard normal (sum of 4 uniforms)
        return (self.u() + self.u() + self.u() + self.u() - 2.0) * 1.7320508


def drive(seed=1, seconds=1800, lat0=48.137, lon0=11.575, t0_ms=30000, utc0=849427200):
    """Yields position record dicts (type pos, no seq) at 1 Hz plus occasional 'event' dicts."""
    r = LCG(seed)
    lat = lat0
    lon = lon0
    heading = r.u() * 360.0
    v = 0.0
    target = 0.0
    turn_rate = 0.0
    turn_left = 0.0
    stop_left = 5
    ex = ey = 0.0  # slowly varying receiver error (m)
    hdop = 9
    sats = 9
    last_course = int(heading * 100)
    m_per_deg = 111320.0
    tj = 0
    for i in range(seconds):
        # driver
        if stop_left > 0:
            stop_left -= 1
            target = 0.0
            if stop_left == 0:
                target = (8.0 + r.u() * 8.0) if r.u() < 0.7 else (19.0 + r.u() * 8.0)
        elif r.u() < 0.012:
            stop_left = 5 + int(r.u() * 40)
        elif r.u() < 0.03:
            target = 6.0 + r.u() * 22.0
        if turn_left <= 0 and v > 3.0 and r.u() < 0.02:
            turn_left = 5 + int(r.u() * 6)
            turn_rate = (90.0 / turn_left) * (1 if r.u() < 0.5 else -1) * (0.4 + 0.6 * r.u())
        acc = target - v
        acc = max(-3.0, min(1.8, acc * 0.4))
        v = max(0.0, v + acc + r.g() * 0.05)
        if turn_left > 0:
            heading += turn_rate
            turn_left -= 1
        heading += r.g() * 0.3 * (1 if v > 1 else 0)
        heading %= 360.0
        hr = heading * math.pi / 180.0
        lat += v * math.cos(hr) / m_per_deg
        lon += v * math.sin(hr) / (m_per_deg * math.cos(lat * math.pi / 180.0))
        # receiver
        ex = ex * 0.983 + r.g() * 0.28
        ey = ey * 0.983 + r.g() * 0.28
        mlat = lat + (ey + r.g() * 0.03) / m_per_deg
        mlon = lon + (ex + r.g() * 0.03) / (m_per_deg * math.cos(lat * math.pi / 180.0))
        # NMEA ddmm.mmmmm resolution
        lat_e7 = int(round(round(mlat * 60.0 * 1e5) / 60.0 / 1e5 * 1e7))
        lon_e7 = int(round(round(mlon * 60.0 * 1e5) / 60.0 / 1e5 * 1e7))
        if v < 0.3:
            sp_kn = 0.0 if r.u() < 0.7 else abs(r.g()) * 0.05
            course = last_course
        else:
            sp_kn = max(0.0, v + r.g() * 0.05) / 0.514444
            course = int(round((heading + r.g() * 0.3) * 100)) % 36000
            last_course = course
        speed_mmps = int(round(round(sp_kn * 1000) / 1000 * 514.444))
        if r.u() < 0.02:
            hdop = max(5, min(30, hdop + (1 if r.u() < 0.5 else -1)))
        if r.u() < 0.015:
            sats = max(4, min(16, sats + (1 if r.u() < 0.5 else -1)))
        tj = int(r.u() * 25)
        t = t0_ms + i * 1000 + 80 + tj
        yield {"type": "pos", "t_ms": t, "utc_s": utc0 + i, "lat_e7": lat_e7, "lon_e7": lon_e7,
               "speed_mmps": speed_mmps, "course_cdeg": course, "hdop_x10": hdop, "sats": sats}
        if abs(acc) > 1.7 and r.u() < 0.3:
            yield {"type": "event", "t_ms": t + 300, "utc_s": utc0 + i,
                   "kind": "harsh_brake" if acc < 0 else "harsh_accel", "dur_ms": 600 + int(r.u() * 900),
                   "peak_mg": int(abs(acc) * 102 + 80), "mean_mg": int(abs(acc) * 80), "speed_start_mmps":
                   speed_mmps, "speed_end_mmps": max(0, speed_mmps + int(acc * 1000)), "lat_e7": lat_e7,
                   "lon_e7": lon_e7, "course_cdeg": course}
