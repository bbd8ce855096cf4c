"""`paydbox simulate`: simulate a drive with ground truth into a trace v1 file."""
import json

from tools.sim import scenarios
from tools.sim.engine import simulate


def add_arguments(p):
    p.add_argument("--scenario", required=True,
                   help="one of: " + ", ".join(list(scenarios.SCENARIOS) + list(scenarios.SLEEP_SCENARIOS)))
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same bytes)")
    p.add_argument("-o", "--output", required=True, metavar="TRACE", help="trace file (.jsonl or .jsonl.gz)")
    p.add_argument("--gnss-hz", type=int, default=1, choices=(1, 5, 10))
    p.add_argument("--accel-hz", type=int, default=100, choices=(25, 50, 100, 200, 400))
    p.add_argument("--duration-s", type=float, default=None,
                   help="parked_overnight: parked time; other scenarios: cut the trace at this time")
    p.add_argument("--gnss-lag-s", type=float, default=0.0, metavar="S",
                   help="GNSS output latency, s (0..3): epochs reach the UART this much later")
    p.add_argument("--sensor", default="lis3dh", choices=("lis3dh", "10hz", "phone"),
                   help="accelerometer class (docs/simulator.md)")
    p.add_argument("--json", action="store_true", help="print the truth summary as JSON")


def run(args):
    scenarios.get(args.scenario)   # clear error for an unknown name
    if args.duration_s is not None and args.duration_s <= 0:
        raise ValueError("--duration-s: must be > 0")
    if not 0.0 <= args.gnss_lag_s <= 3.0:
        raise ValueError("--gnss-lag-s: %g is outside 0..3 s" % args.gnss_lag_s)
    r = simulate(args.output, args.scenario, seed=args.seed, gnss_hz=args.gnss_hz, accel_hz=args.accel_hz,
                 duration_s=args.duration_s, gnss_lag_s=args.gnss_lag_s, sensor=args.sensor)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        counts = {}
        for e in r["events"]:
            counts[e["type"]] = counts.get(e["type"], 0) + 1
        print("%s: scenario %s seed %d, %.1f s, %.1f m true distance, %d trip(s), events %s, gnss outages %d"
              % (args.output, args.scenario, args.seed, r["duration_s"], r["dist_m"], len(r["trips"]),
                 ", ".join("%s %d" % kv for kv in sorted(counts.items())) or "none", len(r["outages"])))
    return 0
