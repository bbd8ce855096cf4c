"""The scenario suite. Each builder takes (rng, duration_s) and returns a spec dict:
{"program": [...commands, see tools/sim/engine.py...], optional "cold_start", "start_utc", "notes",
"limit_s"}.

CI-sized scenarios are 3-10 minutes of driving; `parked_overnight` is 30 min unless --duration-s says more
(the bench uses 8 h).
"""
import math

from tools.sim.route import Piece as P

QUARTER = math.pi / 2


def _turn(rng, side=None, v=25):
    r = rng.uniform(12.0, 18.0)
    side = side if side is not None else rng.choice((-1, 1))
    return P(QUARTER * r, side * r, v)


def _urban(rng, n, canyon=False, light_p=0.5, rough=1.0, potholes=(0, 1), light_s=(10, 45)):
    out = []
    for _ in range(n):
        stop = rng.uniform(*light_s) if rng.random() < light_p else None
        out.append(P(rng.uniform(150, 350), 0, 50, canyon=canyon, rough=rough, stop=stop,
                     potholes=rng.randint(*potholes)))
        if rng.random() < 0.6:
            t = _turn(rng)
            t.opts.update(canyon=canyon, rough=rough)
            out.append(t)
    return out


def _jam(rng, n=6):
    return [P(rng.uniform(15, 35), 0, 20, stop=rng.uniform(3, 8)) for _ in range(n)]


def commute(rng, duration_s=None):
    drive = [
        P(150, 0, 30),
        _turn(rng, 1),
        P(300, 0, 50, stop=rng.uniform(20, 35), potholes=1),
        P(260, 0, 50, a=3.4, jerk=8.0),                 # harsh acceleration away from the light
        P(60 * QUARTER, -60, 70, alat=2.2),              # right-hand curve, normal lateral
        P(600, 0, 70, glitch="zero"),                    # one (0,0) fix
        P(250, 0, 50, canyon=True, stop=rng.uniform(15, 30)),
        P(350, 0, 50, b=4.0, jerk=9.0, stop=rng.uniform(15, 25)),   # harsh braking at a light
    ] + _jam(rng) + [
        P(500, 0, 70, glitch="jump"),                    # one jump glitch
        P(60 * QUARTER, 60, 90, alat=4.1),               # harsh cornering to the left
        P(300, 0, 50, potholes=1),
        _turn(rng, -1, v=20),
        P(80, 0, 20),
    ]
    return {"program": [("park", 20, {"slams": 1}), ("start",), ("idle", 15), ("drive", drive),
                        ("idle", 5), ("off",), ("park", 30, {"slams": 2})],
            "notes": "urban commute with lights, a jam, 3 harsh events, a (0,0) fix and a jump glitch"}


def highway(rng, duration_s=None):
    drive = _urban(rng, 2) + [
        P(120 * QUARTER, 120, 90),                       # on-ramp
        P(3000, 0, 120),
        P(1500, 0, 145),                                 # over-speed stretch (truth limit 130 km/h)
        P(2500, 0, 120),
        P(150 * QUARTER, -150, 70),                      # exit
        P(400, 0, 50, stop=rng.uniform(15, 30)),
        P(300, 0, 50),
    ]
    return {"program": [("park", 10), ("start",), ("idle", 10), ("drive", drive), ("off",), ("park", 10)],
            "notes": "highway at 120 km/h with an over-speed stretch at 145 km/h"}


def urban_canyon(rng, duration_s=None):
    drive = (_urban(rng, 10, canyon=True, light_p=0.6, rough=1.6, potholes=(0, 2))
             + [P(100, 0, 30, canyon=True)])
    return {"program": [("park", 10), ("start",), ("idle", 10), ("drive", drive), ("off",), ("park", 10)],
            "notes": "narrow streets between tall buildings: multipath bursts, high HDOP, cobbles"}


def tunnel(rng, duration_s=None):
    drive = _urban(rng, 1) + [
        P(800, 0, 70),
        P(1200, 0, 70, tunnel=True),
        P(600, 0, 70),
        P(30 * QUARTER, -30, 50),
        P(300, 0, 50, tunnel=True),
        P(400, 0, 50, stop=rng.uniform(15, 30)),
        P(300, 0, 50),
    ]
    return {"program": [("park", 10), ("start",), ("idle", 10), ("drive", drive), ("off",), ("park", 10)],
            "notes": "a 1.2 km and a 300 m tunnel (no fix inside)"}


def parked_overnight(rng, duration_s=None):
    secs = float(duration_s) if duration_s else 1800.0
    return {"program": [("park", secs, {"slams": 2 + int(secs // 7200)})], "limit_s": None,
            "start_utc": "2026-11-23T20:00:00Z",
            "notes": "parked with the ignition off, GNSS drifting, door slams"}


def aggressive(rng, duration_s=None):
    drive = []
    for _ in range(5):
        drive += _urban(rng, 2, light_p=0.8, light_s=(8, 25))
        drive.append(P(rng.uniform(40, 60) * QUARTER, rng.choice((-1, 1)) * rng.uniform(40, 60), 70))
        drive.append(P(rng.uniform(200, 400), 0, 70, stop=rng.uniform(8, 25)))
    return {"program": [("park", 10), ("start",), ("idle", 5), ("drive", drive, "aggressive"), ("off",),
                        ("park", 10)],
            "notes": "aggressive driver: hard launches, late braking, fast curves"}


def calm(rng, duration_s=None):
    drive = _urban(rng, 4, rough=2.0, potholes=(1, 3)) + [
        P(80 * QUARTER, -80, 90, rough=1.5),
        P(2000, 0, 90, potholes=3, rough=1.5),
        P(100 * QUARTER, 100, 90),
        P(800, 0, 70, potholes=2, stop=rng.uniform(20, 40)),
    ] + _urban(rng, 3, rough=2.0, potholes=(1, 3))
    return {"program": [("park", 20, {"slams": 2}), ("start",), ("idle", 420), ("drive", drive, "calm"),
                        ("idle", 5), ("off",), ("park", 20, {"slams": 1})],
            "notes": "calm driver on rough roads with potholes; a 7-minute warm-up idle (idle event); no "
                     "harsh event in truth"}


def crash(rng, duration_s=None):
    drive = _urban(rng, 3) + [P(300, 0, 50), P(200, 0, 50, crash=True)]
    return {"program": [("park", 10), ("start",), ("idle", 5), ("drive", drive), ("idle", 20), ("off",),
                        ("park", 60, {"slams": 2})],
            "notes": "frontal impact at ~50 km/h"}


def crash_slow(rng, duration_s=None):
    drive = _urban(rng, 2) + [P(200, 0, 25), P(120, 0, 25, crash=True)]
    return {"program": [("park", 10), ("start",), ("idle", 5), ("drive", drive), ("idle", 20), ("off",),
                        ("park", 30)],
            "notes": "low-speed impact at ~25 km/h (car park): the car stops, so it is a crash"}


def crash_tunnel(rng, duration_s=None):
    drive = _urban(rng, 2) + [P(300, 0, 50), P(400, 0, 50, tunnel=True, crash=True)]
    return {"program": [("park", 10), ("start",), ("idle", 5), ("drive", drive), ("idle", 30), ("off",),
                        ("park", 30)],
            "notes": "impact at ~50 km/h inside a tunnel: no GNSS speed to confirm it, still a crash"}


def shocks(rng, duration_s=None):
    """3 g+ spikes that are not collisions: each would trip a threshold-only crash detector."""
    g = 9.80665
    drive = _urban(rng, 1) + [
        P(400, 0, 50, shock=(0.1 * g, 0.05 * g, rng.uniform(5.0, 7.0) * g, 0.04)),  # deep pothole at 50 km/h
        P(300, 0, 70),
        P(400, 0, 70, shock=(0.2 * g, rng.uniform(4.0, 6.0) * g, 2.0 * g, 0.04)),  # kerb strike, keeps going
        P(300, 0, 50, stop=rng.uniform(15, 25)),
        # speed bump taken too fast
        P(400, 0, 50, shock=(-0.5 * g, 0.3 * g, rng.uniform(6.0, 8.0) * g, 0.05)),
        P(200, 0, 30),
    ]
    return {"program": [("park", 10), ("drop", rng.uniform(6.0, 10.0)),  # box dropped while fitting
                        ("park", 20), ("start",), ("idle", 5), ("drive", drive), ("idle", 5), ("off",),
                        ("park", 30), ("drop", rng.uniform(8.0, 14.0)), ("park", 10)],
            "notes": "shocks without a collision: a box dropped during fitting (twice), a deep pothole, a "
                     "kerb strike and a speed bump at speed; the speed does not change, so none is a crash"}


def towing(rng, duration_s=None):
    tow = [P(200, 0, 30), _turn(rng), P(1500, 0, 70), P(50 * QUARTER, 50, 50), P(800, 0, 60), P(200, 0, 30)]
    return {"program": [("park", 60, {"slams": 1}), ("tow", tow), ("park", 60)],
            "notes": "the car is towed away with the ignition off"}


def unplugged(rng, duration_s=None):
    drive = _urban(rng, 2) + [P(600, 0, 70), P(1500, 0, 70, unplug=True), P(500, 0, 70)] + _urban(rng, 2)
    return {"program": [("park", 10), ("start",), ("idle", 10), ("drive", drive), ("off",), ("park", 10)],
            "notes": "the box is unplugged for ~80 s mid-trip while the car keeps driving"}


def cold_start(rng, duration_s=None):
    drive = [P(300, 0, 30)] + _urban(rng, 6)
    return {"program": [("start",), ("idle", 8), ("drive", drive), ("off",), ("park", 10)],
            "cold_start": True,
            "notes": "box powered for the first time: no fix for 30-60 s, then a poor one"}


def remount(rng, duration_s=None):
    before = _urban(rng, 3) + [P(300, 0, 50, a=3.4, jerk=8.0, b=4.0, stop=10)]
    after = [P(300, 0, 50, a=3.4, jerk=8.0), P(50 * QUARTER, -50, 70, alat=4.1),
             P(400, 0, 50, b=4.0, jerk=9.0, stop=15)]
    after += _urban(rng, 3)
    return {"program": [("park", 10), ("start",), ("idle", 5), ("drive", before), ("remount", 20),
                        ("drive", after), ("off",), ("park", 10)],
            "notes": "the box is taken off and re-mounted at another orientation mid-trip"}


def brake_corner(rng, duration_s=None):
    drive = [P(200, 0, 50)]
    for _ in range(4):
        side = rng.choice((-1, 1))
        r = rng.uniform(55.0, 70.0)
        drive += [
            P(rng.uniform(250, 400), 0, 80),
            # a fast bend, braked hard inside it (a hazard): harsh braking and harsh cornering at once
            P(r * QUARTER, side * r, 80, alat=5.0, b=4.3, jerk=9.0, late_brake=(0.25, 15)),
            P(120, 0, 50, stop=rng.uniform(3, 8)),
            # a hard launch into a fast bend: harsh acceleration while cornering
            P(0.8 * r * QUARTER, -side * r, 80, a=3.6, jerk=8.0, alat=5.0),
            P(rng.uniform(150, 300), 0, 60),
        ]
        drive += _urban(rng, 1, light_p=0.3)
    return {"program": [("park", 10), ("start",), ("idle", 5), ("drive", drive, "aggressive"), ("off",),
                        ("park", 10)],
            "notes": "harsh braking inside fast bends and hard launches into bends (two axes at once)"}


def brake_corner_early(rng, duration_s=None):
    """Braking hard inside a fast bend and launching into the next one in the first minute of the drive,
    while the mount calibration is still open: the box holds those manoeuvres as candidates and
    classifies them once it commits, each on both axes (a braked bend is a harsh brake and a harsh
    corner)."""
    drive = [P(40, 0, 50)]
    for _ in range(2):
        side = rng.choice((-1, 1))
        r = rng.uniform(40.0, 50.0)
        drive += [
            P(r * QUARTER, side * r, 70, alat=5.0, b=4.3, jerk=9.0, late_brake=(0.2, 15)),
            P(100, 0, 50, stop=rng.uniform(3, 6)),
            P(0.8 * r * QUARTER, -side * r, 70, a=3.6, jerk=8.0, alat=5.0),
            P(rng.uniform(60, 120), 0, 60),
        ]
    drive += _urban(rng, 3, light_p=0.5)
    return {"program": [("park", 10), ("start",), ("idle", 5), ("drive", drive, "aggressive"), ("off",),
                        ("park", 10)],
            "notes": "braked bends and launches into bends before the calibration commits (two axes at once)"}


DAY = 86400.0
PARKED_AWAKE_S = 420.0   # full data after a drive: trip end (180 s still) + backlog + hold + agent shutdown
WAKE_WINDOW_S = 80.0     # full data after a disturbance: the box confirms movement within 60 s


def _short_drive(rng):
    return (_urban(rng, 3, light_p=0.4) + [P(rng.uniform(400, 800), 0, 70, stop=rng.uniform(5, 15))]
            + _urban(rng, 2))


def _drive_at(rng, t_abs, crank=None):
    start = [("start", {"crank_mv": crank})] if crank else [("start",)]
    return [("skip_to", t_abs - 30.0), ("park", 25.0, {"slams": 1})] + start + [
        ("idle", rng.uniform(5, 20)), ("drive", _short_drive(rng)), ("idle", 3), ("off",),
        ("park", PARKED_AWAKE_S, {"slams": 1})]


def parked_week(rng, duration_s=None):
    """A week parked in the street between two short drives a day, with the box asleep in between:
    door slams (getting in and out, and one in the evening), wind gusts at night, an automatic car wash,
    a deep crank dip on a cold morning, a night-time tow (Tuesday 03:10, about 5 km), and a battery
    that loses 140 mV a day from 12.65 V, below the 11.8 V cut-off on the seventh day."""
    prog = [("park", 60.0)]   # the box boots (fitted) awake
    tow = [P(150, 0, 20), _turn(rng, v=20), P(2500, 0, 60), P(40 * QUARTER, 40, 40), P(1800, 0, 60),
           _turn(rng, v=20), P(200, 0, 20)]
    for d in range(7):
        b = d * DAY
        if d in (0, 2, 4):   # gusts in the night
            prog += [("skip_to", b + rng.uniform(1.0, 2.5) * 3600),
                     ("wind", rng.uniform(40, 90), WAKE_WINDOW_S)]
        if d == 1:
            prog += [("skip_to", b + 3 * 3600 + 600), ("tow_away", tow, WAKE_WINDOW_S)]
        prog += _drive_at(rng, b + 7.5 * 3600 + rng.uniform(-1200, 1200), crank=7200 if d == 3 else None)
        if d == 1:
            prog += [("skip_to", b + 13 * 3600 + rng.uniform(0, 3600)),
                     ("wash", rng.uniform(300, 420), WAKE_WINDOW_S)]
        prog += _drive_at(rng, b + 17.75 * 3600 + rng.uniform(-1800, 1800))
        prog += [("skip_to", b + 21 * 3600 + rng.uniform(0, 3600)), ("slam_window", WAKE_WINDOW_S)]
    prog.append(("skip_to", 7 * DAY))
    return {"program": prog, "sleep": True, "battery": (12650.0, 140.0), "start_utc": "2026-11-23T00:00:00Z",
            "notes": "a week parked between two short drives a day: door slams, wind, a car wash, a crank "
                     "dip, a night-time tow, the battery falling to cut-off"}


SCENARIOS = {
    "commute": commute,
    "highway": highway,
    "urban_canyon": urban_canyon,
    "tunnel": tunnel,
    "parked_overnight": parked_overnight,
    "aggressive": aggressive,
    "calm": calm,
    "crash": crash,
    "crash_slow": crash_slow,
    "crash_tunnel": crash_tunnel,
    "shocks": shocks,
    "towing": towing,
    "unplugged": unplugged,
    "cold_start": cold_start,
    "remount": remount,
    "brake_corner": brake_corner,
    "brake_corner_early": brake_corner_early,
}

# scenarios whose trace models the box asleep (header "sleep"): replayed by `paydbox power`, not by the
# evaluation suite (a week of them is not CI-sized)
SLEEP_SCENARIOS = {
    "parked_week": parked_week,
}

# the reduced suite CI replays (short, covering distance, events, crash, parking)
CI_SUITE = ["commute", "crash", "parked_overnight"]


def get(name):
    f = SCENARIOS.get(name) or SLEEP_SCENARIOS.get(name)
    if f is None:
        raise ValueError("scenario: unknown %r (known: %s)"
                         % (name, ", ".join(sorted(SCENARIOS) + sorted(SLEEP_SCENARIOS))))
    return f
