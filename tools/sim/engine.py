"""The drive simulator: vehicle dynamics, sensors (accelerometer, GNSS NMEA, supply) and ground truth.

A scenario is a program of commands executed in order by `Sim`:

    ("park", seconds, {"slams": n})     ignition off, engine off, standing still (door slams while parked)
    ("start",)                          ignition on, crank dip, engine running
    ("idle", seconds)                   engine running, standing still
    ("drive", [Piece, ...])             drive the pieces (stops at lights per piece, at the end of the list)
    ("tow", [Piece, ...])               moved with the ignition off (on a tow truck)
    ("off",)                            engine and ignition off
    ("remount", seconds)                standing; the box is taken off and re-mounted with a new rotation
    ("unplug", seconds)                 the box is unplugged (off) while standing
    ("drop", g)                         standing; the loose box is dropped (fitting): a g impact, no speed
                                        change

The kinematics run at the accelerometer rate; everything is deterministic for a seed (random.Random).
"""
import datetime
import math
import random

from hw.trace_format import TraceWriter
from tools.sim import nmea_gen
from tools.sim.route import Frame, Route, course_deg

G = 9.80665

# thresholds used to label the truth (firmware defaults, Teltonika-like; see docs/simulator.md)
HARSH_ACCEL_MPS2 = 2.5
HARSH_BRAKE_MPS2 = 2.7
HARSH_CORNER_MPS2 = 3.4
GATE_KMH = 10.0
CORNER_GATE_KMH = 30.0
MIN_EVENT_S = 0.5
IDLE_MIN_S = 300.0      # firmware/trip.py idle_event_s
OVERSPEED_KMH = 130.0
OVERSPEED_MIN_S = 10.0  # firmware/trip.py overspeed_min_s
TOWING_MIN_S = 10.0
ACT_FLOOR_MG = 50.0     # parked traces: accel_int lines for seconds whose activity reaches this

DRIVERS = {
    # a: max accel, b: braking, alat: lateral comfort, jerk (m/s^3), cruise: fraction of the limit
    "calm": {"a": 1.2, "b": 1.4, "alat": 2.0, "jerk": 2.5, "cruise": 0.95},
    "normal": {"a": 1.8, "b": 2.0, "alat": 2.6, "jerk": 4.0, "cruise": 1.0},
    "aggressive": {"a": 3.8, "b": 4.2, "alat": 4.6, "jerk": 10.0, "cruise": 1.08},
    "tow": {"a": 0.9, "b": 1.2, "alat": 1.5, "jerk": 2.0, "cruise": 0.9},
}


# Accelerometer classes (docs/simulator.md). out_hz: the sensor's own output rate (None: the trace rate);
# interp: the sensor's host interpolates its samples to the trace rate (linearly, so one output period
# late), as a phone app does; bias_mg: initial bias range; drift_mg_per_min: slow bias drift (per axis,
# random sign) plus a random walk; cradle: (resonance Hz, damping ratio) of a windshield cradle that
# carries the vibration to the sensor, and tilt_deg_per_mps2 its pitch under longitudinal acceleration.
SENSORS = {
    "lis3dh": {"out_hz": None, "interp": False, "noise_mg": 5.0, "bias_mg": 40.0, "drift_mg_per_min": 0.0,
               "cradle": None, "tilt_deg_per_mps2": 0.0},
    "10hz": {"out_hz": 10, "interp": False, "noise_mg": 8.0, "bias_mg": 60.0, "drift_mg_per_min": 1.0,
             "cradle": None, "tilt_deg_per_mps2": 0.0},
    "phone": {"out_hz": 10, "interp": True, "noise_mg": 15.0, "bias_mg": 80.0, "drift_mg_per_min": 2.0,
              "cradle": (11.0, 0.06), "tilt_deg_per_mps2": 0.2},
}


def random_rotation(rng):
    """Uniform over SO(3) (unit quaternion from 4 Gaussians). Returns R as 3 rows (box -> vehicle)."""
    while True:
        q = [rng.gauss(0, 1) for _ in range(4)]
        n = math.sqrt(sum(c * c for c in q))
        if n > 1e-6:
            break
    w, x, y, z = [c / n for c in q]
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]


class _Run:
    """Labels runs of a signal above a threshold lasting >= min_s (truth events).

    With `margin` (e.g. 0.85) the run is followed from margin * thr on, so borderline cases are labelled
    `marginal` instead of being silently clear-cut: an event lasting < min_s + 0.2 s or peaking < 1.1 thr,
    and a near miss (>= 0.3 s above margin * thr but < min_s above thr). The evaluation neither rewards nor
    punishes the box on marginal events."""

    def __init__(self, sim, kind, thr, min_s, margin=None, clear_s=0.2, clear_ratio=1.1):
        self.clear_s = clear_s
        self.clear_ratio = clear_ratio
        self.sim = sim
        self.kind = kind
        self.thr = thr
        self.min_s = min_s
        self.low = thr * margin if margin else thr
        self.margin = margin
        self.start = None

    def update(self, t, gate, value):
        if gate and value > self.low:
            if self.start is None:
                self.start = t
                self.peak = 0.0
                self.above = 0.0
                self.first = self.last = None
            if value > self.peak:
                self.peak = value
            if value > self.thr:
                self.above += self.sim.dt
                if self.first is None:
                    self.first = t
                self.last = t + self.sim.dt
        elif self.start is not None:
            self.close(t)

    def close(self, t):
        if self.start is None:
            return
        if self.above >= self.min_s - 1e-9:
            clear = (self.above >= self.min_s + self.clear_s - 1e-9
                     and self.peak >= self.thr * self.clear_ratio)
            self.sim.truth_event(self.kind, self.first, self.last, self.peak,
                                 marginal=bool(self.margin) and not clear)
        elif self.margin and t - self.start >= 0.3:
            self.sim.truth_event(self.kind, self.start, t, self.peak, marginal=True)
        self.start = None


class Sim:
    def __init__(self, path, scenario, seed, gnss_hz=1, accel_hz=100, duration_s=None,
                 start_utc="2026-11-23T08:00:00Z", lat0=45.76, lon0=4.84, talker="GN", notes="",
                 gnss_lag_s=0.0, sensor="lis3dh", sleep=False, battery=None):
        if not 0.0 <= gnss_lag_s <= 3.0:
            raise ValueError("gnss_lag_s: must be within 0..3 s, got %r" % (gnss_lag_s,))
        if sensor not in SENSORS:
            raise ValueError("sensor: must be one of %s, got %r" % (", ".join(SENSORS), sensor))
        if gnss_hz not in (1, 5, 10):
            raise ValueError("gnss_hz: must be 1, 5 or 10, got %r" % gnss_hz)
        if accel_hz not in (25, 50, 100, 200, 400):
            raise ValueError("accel_hz: must be one of 25, 50, 100, 200, 400, got %r" % accel_hz)
        self.rng = random.Random(seed)
        self.seed = seed
        self.scenario = scenario
        self.gnss_hz = gnss_hz
        self.accel_hz = accel_hz
        self.gnss_lag_s = float(gnss_lag_s)
        self.sensor = sensor
        sc = SENSORS[sensor]
        self.sc = sc
        if sc["out_hz"] and (accel_hz % sc["out_hz"] or sc["out_hz"] > accel_hz):
            raise ValueError("accel_hz: %d is not a multiple of the %s sensor's %d Hz"
                             % (accel_hz, sensor, sc["out_hz"]))
        # the trace's accelerometer rate: the sensor's own, or the trace rate when its host interpolates
        self.out_hz = sc["out_hz"] if (sc["out_hz"] and not sc["interp"]) else accel_hz
        self.dt = 1.0 / accel_hz
        self.per_epoch = accel_hz // gnss_hz if accel_hz >= gnss_hz else 1
        self.limit_s = duration_s
        self.frame = Frame(lat0, lon0)
        self.talker = talker
        self.start_dt = datetime.datetime.strptime(start_utc, "%Y-%m-%dT%H:%M:%SZ")
        self.baud = {1: 9600, 5: 38400, 10: 115200}[gnss_hz]
        header = {
            "device": {"id": "sim-%04d" % (seed % 10000), "source": "simulate",
                       "notes": ("scenario %s seed %d. %s" % (scenario, seed, notes)).strip()},
            "start_utc": start_utc,
            "duration_s": 0.0,   # rewritten below through the 'sim' block; readers use the stream
            "gnss": {"baud": self.baud, "rate_hz": gnss_hz, "receiver": "u-blox M8 (simulated)"},
            "accel": {"chip": "lis3dh" if sensor == "lis3dh" else "%s (simulated)" % sensor,
                      "rate_hz": self.out_hz, "unit": "mg"},
            "power": {"nominal_mv": 12600},
            "truth": True,
            "sim": {"scenario": scenario, "seed": seed, "talker": talker,
                    "thresholds": {"harsh_accel_mps2": HARSH_ACCEL_MPS2, "harsh_brake_mps2": HARSH_BRAKE_MPS2,
                                   "harsh_corner_mps2": HARSH_CORNER_MPS2, "gate_kmh": GATE_KMH,
                                   "corner_gate_kmh": CORNER_GATE_KMH, "min_event_s": MIN_EVENT_S,
                                   "idle_min_s": IDLE_MIN_S, "overspeed_kmh": OVERSPEED_KMH}},
        }
        self.sleep_model = sleep
        if sleep:
            # parked with the box asleep (docs/trace-format.md): activity interrupts instead of samples
            header["sleep"] = {"floor_mg": ACT_FLOOR_MG}
        if self.gnss_lag_s or sensor != "lis3dh":
            header["sim"]["gnss_lag_s"] = self.gnss_lag_s
            header["sim"]["sensor"] = sensor
        self.header = header
        self.w = TraceWriter(path, header, window_s=5.0) if path else None
        rng = self.rng
        # vehicle state
        self.route = Route(heading_deg=rng.uniform(0, 360))
        self.s = 0.0
        self.v = 0.0
        self.a = 0.0
        self.alat = 0.0
        self.heading = self.route._h
        self.dist = 0.0
        self.engine = 0
        self.ign = 0
        self.box_on = 1
        self.towing = 0
        self.n = 0          # sample index
        self.t = 0.0
        # sensor state
        self.R = random_rotation(rng)
        self.bias = [rng.uniform(-40, 40) for _ in range(3)]
        self.noise_mg = 5.0
        # sensor class effects draw from their own generator: the default LIS3DH traces keep their bytes
        self.srng = random.Random(seed * 31 + 7)
        self.drift = [0.0, 0.0, 0.0]
        if sensor != "lis3dh":
            sr = self.srng
            self.noise_mg = sc["noise_mg"]
            self.bias = [sr.uniform(-sc["bias_mg"], sc["bias_mg"]) for _ in range(3)]
            self.drift = [sr.choice((-1, 1)) * sr.uniform(0.5, 1.0) * sc["drift_mg_per_min"] / 60.0
                          for _ in range(3)]
        self.cradle = [[0.0, 0.0] for _ in range(3)]   # resonator state (position, velocity) per axis
        self.s_prev = None     # previous sensor output sample (interpolating host)
        self.s_last = None
        self.ph = [0.0, 0.0, 0.0]
        self.tex = [0.0, 0.0, 0.0]
        self.pulses = []      # (t0, dur, [ax, ay, az] m/s^2 amplitude vehicle frame, kind)
        self.rpm = 0.0
        # GNSS state
        self.gm = [0.0, 0.0]
        self.gm_sigma = 1.5
        self.gm_tau = rng.uniform(30, 100)
        self.mp = None        # multipath burst (t0, t1, de, dn)
        self.fix_after = 0.0  # no fix before this time (cold/warm start, tunnel exit)
        self.time_after = 0.0
        self.poor_until = -1.0
        self.poor_err = [0.0, 0.0]
        self.outage = None    # (start, reason)
        self.hdop_base = rng.uniform(0.75, 1.1)
        self.sats_base = rng.randint(9, 13)
        self.hdop_walk = 0.0
        self.pending_glitch = None
        self.last_course = 0.0
        # power; battery: (mV at t=0, mV lost per day) of the parked battery (None: 12.4 V, -20 mV/h)
        self.battery = battery
        self.act_peak = 0.0   # activity (high-pass |a|, mg) of the current second: accel_int lines
        self.act_t = 0.0
        self.act_ms = 0.0
        self.mv = 12400.0
        self.crank_until = -1.0
        self.last_power = None
        self.last_power_t = -100.0
        # truth trackers
        self.trip = None
        self.idle_start = None
        self.runs = {
            "harsh_accel": _Run(self, "harsh_accel", HARSH_ACCEL_MPS2, MIN_EVENT_S, 0.85),
            "harsh_brake": _Run(self, "harsh_brake", HARSH_BRAKE_MPS2, MIN_EVENT_S, 0.85),
            "harsh_corner_left": _Run(self, "harsh_corner_left", HARSH_CORNER_MPS2, MIN_EVENT_S, 0.85),
            "harsh_corner_right": _Run(self, "harsh_corner_right", HARSH_CORNER_MPS2, MIN_EVENT_S, 0.85),
            "overspeed": _Run(self, "overspeed", OVERSPEED_KMH / 3.6, OVERSPEED_MIN_S, 0.97, 3.0, 1.05),
        }
        self.tow_start = None
        self.tow_peak = 0.0
        self.in_crash = False
        self.chunk = []
        self.chunk_t = 0.0
        self.events = []      # truth events, also returned in the summary
        self.trips = []
        self.outages = []
        self.done = False
        self.piece = None
        self._truth_mount(0.0)

    # ---------------------------------------------------------------- truth
    def truth_event(self, kind, start, end, peak, marginal=False):
        ev = {"type": kind, "start": round(start, 3), "end": round(end, 3), "peak_mps2": round(peak, 3)}
        if marginal:
            ev["marginal"] = 1
        self.events.append(ev)
        if self.w:
            self.w.add(end, "truth", kind="event", **ev)

    def _idle_close(self, t):
        d = t - self.idle_start
        if d >= 0.8 * IDLE_MIN_S:
            # within 20 % of the threshold either way: borderline
            self.truth_event("idle", self.idle_start, t, 0.0, marginal=d < 1.2 * IDLE_MIN_S)
        self.idle_start = None

    def _truth_mount(self, t):
        if self.w:
            self.w.add(t, "truth", kind="mount", R=[[round(c, 6) for c in row] for row in self.R])

    def _outage_begin(self, t, reason):
        if self.outage is None:
            self.outage = (t, reason)

    def _outage_end(self, t):
        if self.outage is not None:
            o = {"start": round(self.outage[0], 3), "end": round(t, 3), "reason": self.outage[1]}
            self.outages.append(o)
            if self.w:
                self.w.add(t, "truth", kind="gnss_outage", **o)
            self.outage = None

    # ---------------------------------------------------------------- one sample
    def tick(self):
        if self.limit_s is not None and self.t >= self.limit_s:
            self.done = True
            raise _Stop()
        t = self.t
        # heading / position from the route
        x, y, h = self.route.pose(self.s)
        self.heading = h
        self.x, self.y = x, y
        # truth labels
        vk = self.v * 3.6
        crash = self.in_crash
        r = self.runs
        r["harsh_accel"].update(t, not crash and vk >= GATE_KMH, self.a)
        r["harsh_brake"].update(t, not crash and vk >= GATE_KMH, -self.a)
        r["harsh_corner_left"].update(t, not crash and vk >= CORNER_GATE_KMH, self.alat)
        r["harsh_corner_right"].update(t, not crash and vk >= CORNER_GATE_KMH, -self.alat)
        r["overspeed"].update(t, self.ign, self.v)
        moving = self.v > 0.0
        if self.engine and not moving:
            if self.idle_start is None:
                self.idle_start = t
        elif self.idle_start is not None:
            self._idle_close(t)
        if moving and not self.ign:
            if self.tow_start is None:
                self.tow_start = t
                self.tow_peak = 0.0
            self.tow_peak = max(self.tow_peak, abs(self.a))
        elif self.tow_start is not None and (self.ign or not self.towing):
            if t - self.tow_start >= TOWING_MIN_S:
                self.truth_event("towing", self.tow_start, t, self.tow_peak)
            self.tow_start = None
        if self.n % self.accel_hz == 0 and self.w:
            lat, lon = self.frame.to_latlon(x, y)
            self.w.add(t, "truth", kind="pos", lat=round(lat, 8), lon=round(lon, 8),
                       speed_mps=round(self.v, 3),
                       course_deg=round(course_deg(h), 2), dist_m=round(self.dist, 3),
                       moving=1 if moving else 0, ign=self.ign)
        # sensors
        self._power(t)
        if self.box_on:
            self._accel(t)
            if self.n % self.per_epoch == 0:
                self._gnss(t)
        elif self.chunk:
            self._flush_chunk()
        self.n += 1
        self.t = self.n * self.dt

    # ---------------------------------------------------------------- supply
    def _power(self, t):
        rng = self.rng
        if not self.box_on:
            mv, ign = 0, 0
        elif t < self.crank_until:
            left = self.crank_until - t
            mv, ign = (self.crank_mv if left <= 0.3 else 12250), 1
        elif self.engine:
            target = 14200 if t > self.crank_until + 0.5 else 13100
            mv, ign = target, 1
        elif self.battery is not None:
            mv, ign = self.battery[0] - self.battery[1] * t / 86400.0, self.ign
        else:
            mv, ign = 12400 - (0.02 * 1000.0 * t / 3600.0 if not self.ign else 0), self.ign
        mv = int(round(mv / 10.0)) * 10
        key = (mv, ign)
        changed = (self.last_power is None or key[1] != self.last_power[1]
                   or abs(key[0] - self.last_power[0]) >= 500)
        if changed or t - self.last_power_t >= 10.0:
            if mv > 0 and not changed:
                mv += int(rng.gauss(0, 20))
            if self.w:
                self.w.add(t, "power", mv=int(mv), ign=int(ign))
            self.last_power = key
            self.last_power_t = t

    # ---------------------------------------------------------------- accelerometer
    def _accel(self, t):
        rng = self.rng
        dt = self.dt
        v = self.v
        fx = self.a
        fy = self.alat
        fz = G
        # engine vibration (4-cylinder: 2nd order at rpm/30 Hz, 1st order at rpm/60 Hz)
        if self.engine:
            if v < 0.5:
                target = 760.0
            else:
                target = 1300.0 + 1700.0 * ((v / 8.5) % 1.0)
            self.rpm += (target - self.rpm) * min(1.0, dt * 3.0)
            f2 = self.rpm / 30.0
            f1 = self.rpm / 60.0
            self.ph[0] = (self.ph[0] + 2 * math.pi * f2 * dt) % (2 * math.pi)
            self.ph[1] = (self.ph[1] + 2 * math.pi * f1 * dt) % (2 * math.pi)
            amp = 0.16 if v < 0.5 else 0.22   # m/s^2 (~16-22 mg)
            s2 = math.sin(self.ph[0])
            s1 = math.sin(self.ph[1])
            fz += amp * s2 + 0.05 * s1
            fy += 0.5 * amp * s2
            fx += 0.3 * amp * s1
        else:
            self.rpm = 0.0
        # road texture: AR(1) filtered noise, grows with speed
        if v > 0.1:
            rough = self.piece.opts.get("rough", 1.0) if self.piece is not None else 1.0
            sig = rough * (0.10 + 0.25 * min(1.0, v / 25.0))
            k = 0.6
            q = math.sqrt(1 - k * k)
            tex = self.tex
            tex[0] = k * tex[0] + q * rng.gauss(0, sig * 0.4)
            tex[1] = k * tex[1] + q * rng.gauss(0, sig * 0.4)
            tex[2] = k * tex[2] + q * rng.gauss(0, sig)
            fx += tex[0]
            fy += tex[1]
            fz += tex[2]
        # pulses (potholes, slams, crash, handling)
        if self.pulses:
            keep = []
            for p in self.pulses:
                t0, dur, amp, kind = p
                u = (t - t0) / dur
                if u > 1.0:
                    continue
                keep.append(p)
                if u < 0:
                    continue
                if kind == "halfsine":
                    g = math.sin(math.pi * u)
                elif kind == "bump":     # pothole: down, up rebound
                    g = math.sin(2 * math.pi * u) * (1.0 - 0.3 * u)
                else:                    # "ring": damped oscillation at 15 Hz
                    g = math.sin(2 * math.pi * 15.0 * (t - t0)) * math.exp(-4.0 * u)
                fx += amp[0] * g
                fy += amp[1] * g
                fz += amp[2] * g
            self.pulses = keep
        if self.sleep_model:
            # what the LIS3DH's high-pass filtered interrupt path sees (gravity removed), in mg
            act = math.sqrt(fx * fx + fy * fy + (fz - G) * (fz - G)) * 1000.0 / G
            if act >= ACT_FLOOR_MG:
                if self.act_peak == 0.0:
                    self.act_t = t
                self.act_ms += dt * 1000.0
                if act > self.act_peak:
                    self.act_peak = act
        sc = self.sc
        if sc["cradle"] is not None:
            fx, fy, fz = self._cradle(fx, fy, fz)
        # into the box frame: b = R^T f
        R = self.R
        k = 1000.0 / G
        if self.sensor != "lis3dh":
            sr = self.srng
            for i in range(3):
                self.bias[i] += self.drift[i] * dt + sr.gauss(0, 0.02)
            if sc["out_hz"] and self.n % (self.accel_hz // sc["out_hz"]):
                # between two output instants of a slow sensor
                if sc["interp"]:
                    self._emit_sample(t, self._interp())
                return
            noise = [sr.gauss(0, self.noise_mg) for _ in range(3)]
        else:
            noise = [rng.gauss(0, self.noise_mg) for _ in range(3)]
        out = []
        for i in range(3):
            val = (R[0][i] * fx + R[1][i] * fy + R[2][i] * fz) * k + self.bias[i] + noise[i]
            val = int(round(val))
            out.append(16000 if val > 16000 else (-16000 if val < -16000 else val))
        if sc["interp"]:
            self.s_prev = self.s_last if self.s_last is not None else out
            self.s_last = out
            self._emit_sample(t, self._interp())
            return
        self._emit_sample(t, out)

    def _interp(self):
        # the host's linear interpolation between the sensor's last two samples (one period late)
        per = self.accel_hz // self.sc["out_hz"]
        u = (self.n % per) / float(per)
        a, b = self.s_prev, self.s_last
        return [int(round(a[i] + (b[i] - a[i]) * u)) for i in range(3)]

    def _cradle(self, fx, fy, fz):
        # a windshield cradle: the vibration (everything but the vehicle's own motion and gravity) reaches
        # the sensor through a lightly damped resonance; the cradle pitches under acceleration
        f0, zeta = self.sc["cradle"]
        w = 2 * math.pi * f0
        dt = self.dt
        out = []
        for i, (f, base) in enumerate(((fx, self.a), (fy, self.alat), (fz, G))):
            st = self.cradle[i]
            u = f - base
            st[1] += (w * w * (u - st[0]) - 2 * zeta * w * st[1]) * dt
            st[0] += st[1] * dt
            out.append(base + st[0])
        th = math.radians(self.sc["tilt_deg_per_mps2"] * self.a)
        c, s_ = math.cos(th), math.sin(th)
        return c * out[0] - s_ * out[2], out[1], s_ * out[0] + c * out[2]

    def _emit_sample(self, t, out):
        if not self.chunk:
            self.chunk_t = t
        self.chunk.append(out)
        if len(self.chunk) >= self.out_hz:
            self._flush_chunk()

    def _flush_chunk(self):
        if self.chunk and self.w:
            self.w.add(self.chunk_t, "accel", mg=self.chunk, rate=self.out_hz)
        self.chunk = []
        if self.act_peak > 0.0:
            if self.w:
                self.w.add(self.act_t, "accel_int", mg=int(self.act_peak), dur_ms=int(round(self.act_ms)))
            self.act_peak = 0.0
            self.act_ms = 0.0

    def pulse(self, dur, amp, kind="halfsine", delay=0.0):
        self.pulses.append((self.t + delay, dur, amp, kind))

    # ---------------------------------------------------------------- GNSS
    def _utc(self, t):
        d = self.start_dt + datetime.timedelta(seconds=t)
        return (d.year, d.month, d.day, d.hour, d.minute, d.second + d.microsecond / 1e6)

    def _gnss(self, t):
        rng = self.rng
        dte = 1.0 / self.gnss_hz
        opts = self.piece.opts if self.piece is not None else {}
        tunnel = opts.get("tunnel", False) and self.v >= 0
        canyon = opts.get("canyon", False)
        # Gauss-Markov position error (time-correlated, continues while parked: drift)
        phi = math.exp(-dte / self.gm_tau)
        sig = self.gm_sigma * (2.0 if canyon else 1.0)
        q = sig * math.sqrt(1 - phi * phi)
        self.gm[0] = phi * self.gm[0] + rng.gauss(0, q)
        self.gm[1] = phi * self.gm[1] + rng.gauss(0, q)
        self.hdop_walk = 0.98 * self.hdop_walk + rng.gauss(0, 0.02)
        if tunnel:
            self._outage_begin(t, "tunnel")
            self.fix_after = t + rng.uniform(1.0, 4.0)
            self.poor_until = self.fix_after + 10.0
            self.poor_err = [rng.gauss(0, 6), rng.gauss(0, 6)]
        fix = None
        if t >= self.fix_after and not tunnel:
            if self.outage is not None:
                self._outage_end(t)
            e = self.x + self.gm[0]
            n = self.y + self.gm[1]
            hdop = self.hdop_base + self.hdop_walk
            sats = self.sats_base + int(round(self.hdop_walk * 10))
            if canyon:
                hdop += rng.uniform(0.6, 1.3)
                sats -= rng.randint(3, 6)
                if self.mp is None and rng.random() < dte / 40.0:
                    ang = rng.uniform(0, 2 * math.pi)
                    mag = rng.uniform(10, 50)
                    t1 = t + rng.uniform(3, 15)
                    self.mp = (t, t1, mag * math.cos(ang), mag * math.sin(ang))
            if self.mp is not None:
                t0, t1, de, dn = self.mp
                if t > t1:
                    self.mp = None
                else:
                    ramp = min(1.0, (t - t0) / 1.5, (t1 - t) / 1.5)
                    e += de * ramp
                    n += dn * ramp
                    hdop += 0.5 * ramp
            if t < self.poor_until:
                left = (self.poor_until - t) / max(1.0, self.poor_len)
                e += self.poor_err[0] * left
                n += self.poor_err[1] * left
                hdop += 3.0 * left
                sats = min(sats, 4 + int(3 * (1 - left)))
            hdop = min(max(hdop, 0.6), 9.9)
            sats = min(max(sats, 4), 14)
            lat, lon = self.frame.to_latlon(e, n)
            glitch = opts.get("glitch")
            if (glitch and self.pending_glitch != id(self.piece) and self.s >= self.piece.s0
                + self.piece.length / 2):
                self.pending_glitch = id(self.piece)
                if glitch == "zero":
                    lat, lon = 0.0, 0.0
                else:
                    ang = rng.uniform(0, 2 * math.pi)
                    mag = rng.uniform(300, 3000)
                    lat, lon = self.frame.to_latlon(e + mag * math.cos(ang), n + mag * math.sin(ang))
            if self.v > 0.05:
                spd = max(0.0, self.v + rng.gauss(0, 0.08 if not canyon else 0.25))
            else:
                spd = abs(rng.gauss(0, 0.03))
            if spd > 0.3:
                crs = (course_deg(self.heading) + rng.gauss(0, 1.0 if not canyon else 4.0)) % 360.0
                self.last_course = crs
            else:
                crs = None
            fix = {"lat": lat, "lon": lon, "alt_m": 172.0 + self.gm[1] * 1.5, "speed_mps": spd,
                   "course_deg": crs, "hdop": hdop, "sats": sats, "quality": 1}
        elif self.outage is None and not tunnel:
            self._outage_begin(t, "unplugged")
        show_time = t >= self.time_after
        data = nmea_gen.epoch(self.talker, self._utc(t), fix, show_time)
        # the receiver prints the epoch ~50 ms after the measurement, plus its output latency (receiver
        # filtering, a phone's location API, a long burst at 9600 baud): gnss_lag_s
        if self.w:
            self.w.gnss(t + 0.05 + self.gnss_lag_s, data)

    poor_len = 30.0

    # ---------------------------------------------------------------- commands
    def run(self, program):
        try:
            for cmd in program:
                getattr(self, "cmd_" + cmd[0])(*cmd[1:])
        except _Stop:
            pass
        self.finish()

    def finish(self):
        t = self.t
        for r in self.runs.values():
            r.close(t)
        if self.idle_start is not None:
            self._idle_close(t)
        if self.tow_start is not None and t - self.tow_start >= TOWING_MIN_S:
            self.truth_event("towing", self.tow_start, t, self.tow_peak)
        if self.trip is not None:
            self._trip_end(t)
        self._outage_end(t) if self.outage is not None else None
        self._flush_chunk()
        if self.w:
            self.w.add(t, "note", text="end of simulation: %.1f s, %.1f m" % (t, self.dist))
            self.w.close(header_update={"duration_s": round(t, 3)})

    def _stand(self, seconds):
        self.v = 0.0
        self.a = 0.0
        self.alat = 0.0
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.tick()

    def cmd_park(self, seconds, opts=None):
        opts = opts or {}
        rng = self.rng
        start = self.t
        end = start + seconds
        self.v = self.a = self.alat = 0.0
        times = sorted(rng.uniform(0.5, max(0.6, seconds - 2.0)) for _ in range(opts.get("slams", 0)))
        for ts in times:
            while self.t < start + ts:
                self.tick()
            self._slam()
        while self.t < end - 1e-9:
            self.tick()

    def _slam(self):
        rng = self.rng
        if self.sleep_model:
            self.disturbance("door_slam", self.t, self.t + 2.0)
        a = rng.uniform(3.0, 12.0)   # 0.3 - 1.2 g
        side = rng.choice((-1, 1))
        self.pulse(rng.uniform(0.2, 0.35), [0.2 * a * rng.uniform(-1, 1), side * a, 0.6 * a], "ring")
        # rocking of the body when someone gets in
        self.pulse(1.2, [0.0, side * 0.4, 0.6], "halfsine", delay=0.4)

    # ---------------------------------------------------------------- parked with the box asleep
    def disturbance(self, kind, start, end):
        """Truth: something shook the parked car (door_slam, wind, car_wash, tow, crank_dip)."""
        if self.w:
            self.w.add(end, "truth", kind="disturbance", type=kind, start=round(start, 3), end=round(end, 3))

    def cmd_skip_to(self, t_abs):
        """Parked, nothing happens until t_abs (trace seconds): the box sleeps with its receiver off, so
        the trace carries no samples and no GNSS, only a power line every 10 minutes; the clock jumps."""
        self.v = self.a = self.alat = 0.0
        self._flush_chunk()
        if t_abs <= self.t:
            return
        if self.limit_s is not None and t_abs >= self.limit_s:
            t_abs = self.limit_s
        t = self.t
        while t + 600.0 < t_abs:
            t += 600.0
            self._power(t)
        self.n = int(math.ceil(t_abs * self.accel_hz - 1e-6))
        self.t = self.n * self.dt
        # the receiver comes back from backup: a hot start
        self.fix_after = self.t + self.rng.uniform(1.0, 3.0)
        if self.limit_s is not None and self.t >= self.limit_s:
            self.done = True
            raise _Stop()

    def cmd_slam_window(self, seconds):
        """A door slam of the parked car, then `seconds` of full sensor data (the box awake)."""
        self._stand(1.0)
        self._slam()
        self._stand(seconds)

    def cmd_wind(self, seconds, window_s):
        """Gusts rock the parked car for `seconds` (20-300 mg), then window_s of data."""
        rng = self.rng
        t0 = self.t
        end = t0 + seconds
        while self.t < end:
            a = rng.uniform(0.2, 3.0)
            self.pulse(rng.uniform(0.8, 2.0), [0.2 * a, rng.choice((-1, 1)) * a, 0.3 * a], "halfsine")
            self._stand(rng.uniform(1.0, 4.0))
        self.disturbance("wind", t0, self.t)
        self._stand(window_s)

    def cmd_wash(self, seconds, window_s):
        """An automatic car wash: brushes and jets shake the standing car (0.1-0.4 g) for `seconds`."""
        rng = self.rng
        t0 = self.t
        end = t0 + seconds
        while self.t < end:
            a = rng.uniform(1.0, 4.0)
            self.pulse(rng.uniform(0.2, 0.8), [rng.gauss(0, a), rng.gauss(0, a), 0.5 * rng.gauss(0, a)],
                       rng.choice(("halfsine", "ring")))
            self._stand(rng.uniform(0.3, 1.2))
        self.disturbance("car_wash", t0, self.t)
        self._stand(window_s)

    def cmd_tow_away(self, pieces, window_s):
        """A night-time tow: the car is winched onto a truck (shakes, tilts), driven away, set down."""
        rng = self.rng
        t0 = self.t
        for _ in range(12):
            a = rng.uniform(2.0, 5.0)
            self.pulse(rng.uniform(0.3, 1.0), [rng.gauss(0, a), rng.gauss(0, a), rng.gauss(0, a)], "halfsine")
            self._stand(rng.uniform(2.0, 5.0))
        self.cmd_tow(pieces)
        for _ in range(4):
            self.pulse(0.5, [rng.gauss(0, 3), rng.gauss(0, 3), rng.gauss(0, 3)], "halfsine")
            self._stand(3.0)
        self.disturbance("tow", t0, self.t)
        self._stand(window_s)

    def cmd_unplug(self, seconds):
        self.box_on = 0
        self._outage_begin(self.t, "unplugged")
        self._stand(seconds)
        self._replug()

    def _replug(self):
        self.box_on = 1
        self.fix_after = self.t + self.rng.uniform(5.0, 25.0)   # warm start after a power cut
        self.poor_until = self.fix_after + 10.0
        self.poor_err = [self.rng.gauss(0, 4), self.rng.gauss(0, 4)]
        self.last_power = None

    def cold_start(self):
        """Box powered for the first time at t: no fix for 30-60 s, no time for the first part, then poor."""
        rng = self.rng
        self.fix_after = self.t + rng.uniform(30.0, 60.0)
        self.time_after = self.t + rng.uniform(8.0, 20.0)
        self.poor_len = rng.uniform(30.0, 60.0)
        self.poor_until = self.fix_after + self.poor_len
        self.poor_err = [rng.gauss(0, 15), rng.gauss(0, 15)]
        self._outage_begin(self.t, "cold_start")

    def cmd_cold_start(self):
        self.cold_start()

    def cmd_start(self, opts=None):
        self.ign = 1
        self.crank_mv = self.rng.uniform(8700, 9500)
        if opts and opts.get("crank_mv"):  # a deep crank dip (cold morning, weak battery)
            self.crank_mv = opts["crank_mv"]
            if self.sleep_model:
                self.disturbance("crank_dip", self.t + 0.7, self.t + 1.0)
        self.crank_until = self.t + 1.0
        if self.trip is None:
            self.trip = (self.t, self.dist)
        self._stand(0.7)
        # cranking shakes the car
        self.pulse(0.3, [0.3, 0.5, 1.5], "ring")
        self._stand(0.3)
        self.engine = 1
        self._stand(1.0)

    def cmd_off(self):
        self.engine = 0
        self.ign = 0
        self._stand(0.5)
        if self.trip is not None:
            self._trip_end(self.t)

    def _trip_end(self, t):
        t0, d0 = self.trip
        tr = {"start": round(t0, 3), "end": round(t, 3), "dist_m": round(self.dist - d0, 3)}
        self.trips.append(tr)
        if self.w:
            self.w.add(t, "truth", kind="trip", **tr)
        self.trip = None

    def cmd_idle(self, seconds):
        self._stand(seconds)

    def cmd_remount(self, seconds):
        rng = self.rng
        end = self.t + seconds
        # handling: the box is unscrewed, turned over and fixed again
        while self.t < end - 0.5:
            if rng.random() < 0.02:
                self.pulse(rng.uniform(0.3, 1.0), [rng.gauss(0, 4) for _ in range(3)], "halfsine")
            if abs(self.t - (end - seconds / 2)) < self.dt / 2:
                self.R = random_rotation(rng)
                self._truth_mount(self.t)
            self.tick()
        self._stand(max(0.0, end - self.t))

    def cmd_tow(self, pieces):
        self.towing = 1
        self._drive(pieces, DRIVERS["tow"])
        self.towing = 0
        self._stand(1.0)

    def cmd_drive(self, pieces, driver="normal"):
        self._drive(pieces, DRIVERS[driver] if isinstance(driver, str) else driver)

    def _drive(self, pieces, drv):
        rng = self.rng
        route = self.route
        first = len(route.pieces)
        route.extend(pieces)
        idx = list(range(first, len(route.pieces)))
        dt = self.dt
        cruise = drv["cruise"]
        wobble = 0.0
        potholes = {}
        shocks = {}
        for i in idx:
            p = route.pieces[i]
            n = p.opts.get("potholes", 0)
            potholes[i] = sorted(p.s0 + rng.uniform(0, p.length) for _ in range(n))
            if p.opts.get("shock"):  # (ax, ay, az m/s2 vehicle frame, dur s) at mid-piece: no speed change
                shocks[i] = p.s0 + p.length / 2
        for i in idx:
            p = route.pieces[i]
            crash = p.opts.get("crash", False)
            stop_here = (p.opts.get("stop") is not None or i == idx[-1]) and not crash
            self.piece = p
            unplug = p.opts.get("unplug", False) and self.box_on
            if unplug:
                self.box_on = 0
                self._outage_begin(self.t, "unplugged")
            a_max = p.opts.get("a", drv["a"])
            jerk = p.opts.get("jerk", drv["jerk"])
            while True:
                s = self.s
                v = self.v
                # desired speed: this piece, pieces ahead (braking distance), the stop at the end
                wobble = 0.999 * wobble + rng.gauss(0, 0.001)
                v_des = p.v_max(drv["alat"]) * cruise * (1.0 + max(-0.03, min(0.03, wobble)))
                for j in range(i + 1, len(route.pieces)):
                    q = route.pieces[j]
                    if q.s0 - s > 800:
                        break
                    bq = q.opts.get("b", drv["b"]) * 0.85
                    v_des = min(v_des, math.sqrt(q.v_max(drv["alat"]) ** 2 * cruise ** 2
                                                 + 2 * bq * (q.s0 - s)))
                    if (q.opts.get("stop") is not None or j == idx[-1]) and not q.opts.get("crash"):
                        v_des = min(v_des, math.sqrt(2 * bq * max(0.0, q.s1 - s - 0.8)))
                        break
                late = p.opts.get("late_brake")
                if late is not None and s >= p.s0 + late[0] * p.length:
                    # a hazard inside the piece: brake hard to late[1] km/h (two axes at once in a bend)
                    v_des = min(v_des, late[1] / 3.6)
                b = p.opts.get("b", drv["b"])
                d_stop = p.s1 - s
                if stop_here and not crash:
                    v_des = min(v_des, math.sqrt(2 * b * 0.85 * max(0.0, d_stop - 0.8)))
                a_des = 1.2 * (v_des - v)
                a_des = max(-b * 1.1, min(a_max, a_des))
                step = jerk * dt
                if a_des > self.a + step:
                    self.a += step
                elif a_des < self.a - step:
                    self.a -= step
                else:
                    self.a = a_des
                v += self.a * dt
                if v <= 0.0:
                    v = 0.0
                    self.a = max(self.a, 0.0)
                ds = v * dt
                self.v = v
                self.s = s + ds
                self.dist += ds
                curv = (1.0 / p.radius) if p.radius else 0.0
                self.alat = v * v * curv
                if i in shocks and self.s >= shocks[i]:
                    del shocks[i]
                    self._shock(p.opts["shock"])
                ph = potholes.get(i)
                if ph and self.s >= ph[0]:
                    ph.pop(0)
                    amp = rng.uniform(5.0, 19.0)
                    self.pulse(0.05, [0.15 * amp, 0.05 * amp * rng.uniform(-1, 1), amp], "bump")
                self.tick()
                if crash and self.s >= p.s1:
                    self._crash()
                    return
                if stop_here and (self.s >= p.s1 - 0.3 or (self.v < 0.3 and p.s1 - self.s < 2.5)):
                    self.v = 0.0
                    self.a = 0.0
                    self.alat = 0.0
                    break
                if not stop_here and self.s >= p.s1:
                    break
            if unplug:
                self._replug()
            if stop_here:
                dwell = p.opts.get("stop") or 0.0
                self._stand(dwell)
        self.v = 0.0
        self.a = 0.0
        self.alat = 0.0

    def _shock(self, spec, kind="halfsine"):
        """A short impact that is not a collision (hard pothole, kerb strike, dropped box): truth
        `shock` with its peak specific force; the vehicle's speed is unchanged."""
        ax, ay, az, dur = spec
        self.pulse(dur, [ax, ay, az], kind)
        self.truth_event("shock", self.t, self.t + dur, math.sqrt(ax * ax + ay * ay + az * az))

    def cmd_drop(self, g):
        rng = self.rng
        a = g * G
        d = [rng.uniform(-1, 1) for _ in range(3)]
        n = math.sqrt(sum(x * x for x in d)) or 1.0
        self._stand(0.5)
        self._shock((a * d[0] / n, a * d[1] / n, a * d[2] / n, rng.uniform(0.03, 0.05)))
        self._stand(2.0)

    def _crash(self):
        rng = self.rng
        dur = rng.uniform(0.06, 0.12)
        v0 = self.v
        peak = math.pi / 2 * v0 / dur
        lat_share = rng.uniform(-0.3, 0.3)
        t0 = self.t
        self.in_crash = True
        self.alat = 0.0
        while self.t < t0 + dur:
            u = (self.t - t0) / dur
            g = math.sin(math.pi * u)
            self.a = -peak * g
            self.v = max(0.0, self.v + self.a * self.dt)
            self.s += self.v * self.dt
            self.dist += self.v * self.dt
            self.alat = lat_share * peak * g
            self.pulses.append((self.t, self.dt, [0.0, 0.0, 0.1 * peak * g], "halfsine"))
            self.tick()
        self.v = 0.0
        self.a = 0.0
        self.alat = 0.0
        self.in_crash = False
        self.truth_event("crash", t0, self.t, peak)


class _Stop(Exception):
    pass


def simulate(path, scenario, seed=1, gnss_hz=1, accel_hz=100, duration_s=None, gnss_lag_s=0.0,
             sensor="lis3dh"):
    """Simulate scenario NAME into the trace at path (None: no file). Returns a summary dict."""
    from tools.sim import scenarios
    build = scenarios.get(scenario)
    rng = random.Random(seed * 7919 + 17)
    spec = build(rng, duration_s)
    sim = Sim(path, scenario, seed, gnss_hz=gnss_hz, accel_hz=accel_hz,
              duration_s=spec.get("limit_s", duration_s),
              start_utc=spec.get("start_utc", "2026-11-23T08:00:00Z"),
              talker=spec.get("talker", "GN" if seed % 3 else "GP"), notes=spec.get("notes", ""),
              gnss_lag_s=gnss_lag_s, sensor=sensor, sleep=spec.get("sleep", False),
              battery=spec.get("battery"))
    if spec.get("cold_start"):
        sim.cold_start()
    sim.run(spec["program"])
    return {"scenario": scenario, "seed": seed, "duration_s": round(sim.t, 3), "dist_m": round(sim.dist, 3),
            "events": sim.events, "trips": sim.trips, "outages": sim.outages, "samples": sim.n}
