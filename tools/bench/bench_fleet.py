"""Fleet load check (`paydbox fleet-sim`) against a Mosquitto started here, so `paydbox bench` has the
fleet figures of docs/fleet.md. Runs the CLI as a subprocess and keeps its JSON result."""
import json
import os
import subprocess
import sys
import tempfile

from tools.brokers import Mosquitto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = [  # (boxes, records per box, duration s)
    (5, 400, 5),
    (200, 120, 60),
]
QUICK = [(5, 100, 2)]
KEYS = ("records_published", "records_stored", "records_lost", "offered_records_per_s", "ingest_records_per_s",
        "lag_p50_ms", "lag_p95_ms", "lag_max_ms")


def _fleet(port, boxes, per_box, duration):
    p = subprocess.run([sys.executable, "-m", "tools.cli", "fleet-sim", "--broker", "mqtt://127.0.0.1:%d" % port,
                        "--boxes", str(boxes), "--records-per-box", str(per_box), "--duration", str(duration),
                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    try:
        r = json.loads(p.stdout[p.stdout.index("{"):])
    except ValueError:
        tail = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
        raise RuntimeError("fleet-sim failed: %s" % tail)
    return {k: r.get(k) for k in KEYS}


def run(quick=False):
    out = {}
    with tempfile.TemporaryDirectory(prefix="paydbox-bench-fleet-") as w:
        with Mosquitto(w) as b:
            for boxes, per_box, dur in (QUICK if quick else RUNS):
                r = _fleet(b.port, boxes, per_box, dur)
                name = "%d boxes x %d records over %d s" % (boxes, per_box, dur)
                for k, v in r.items():
                    out["%s: %s" % (name, k)] = v
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))
