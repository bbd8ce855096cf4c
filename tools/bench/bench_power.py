"""Power management on a simulated week parked (`paydbox simulate --scenario parked_week`), replayed with
`paydbox power` (firmware/power.py, tools/trace/power.py): time in each state, agent wakes by cause, the
average parked current at 12 V from the datasheet budget (docs/power.md), days to half a 60 Ah battery, the
tow, records lost, and the replay's speed (a week of box time in wall seconds).

    python -m tools.bench.bench_power [--quick]     (quick: two days)
"""
import os
import sys
import tempfile
import time

NOTE = ("A week parked (`paydbox simulate --scenario parked_week`, seed 1: 14 short drives, door slams, "
        "wind, a car wash, a crank dip, a night-time tow, the battery falling through the cut-off) replayed "
        "by `paydbox power` through the firmware (CPython) with the simulated agent; currents from the cited "
        "datasheet budget of docs/power.md, at 12 V. Targets: parked current <= 2.0 mA (goal 1.0) incl. the "
        "daily heartbeat, no agent wake from door slams or wind, the tow caught, nothing lost.")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(quick=False):
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tools.sim.engine import simulate
    from tools.trace.power import attribute, energy_report, run_power, targets

    days = 2 if quick else 7
    out = {}
    with tempfile.TemporaryDirectory(prefix="paydbox-bench-power-") as tmp:
        path = os.path.join(tmp, "parked_week.jsonl.gz")
        t0 = time.time()
        simulate(path, "parked_week", seed=1, duration_s=days * 86400.0)
        out["simulate_wall_s"] = round(time.time() - t0, 1)
        t0 = time.time()
        res = attribute(run_power(path), path)
        out["days"] = days
        out["replay_wall_s"] = round(time.time() - t0, 1)
        for mcu in ("mcu_esp32", "mcu_rp2040"):   # the same replay, the other MCU's datasheet currents
            e = energy_report(res["_power"], mcu)
            out["%s_avg_parked_ma" % mcu[4:]] = e["avg_parked_ma"]
            out["%s_days_to_half_60ah" % mcu[4:]] = e["days_to_half_60ah"]
        for k, v in res["time_in_state_s"].items():
            out["time_in_%s_h" % k] = round(v / 3600.0, 2)
        for k, v in sorted(res["agent_wakes"].items()):
            out["agent_wakes_%s" % k] = v
        out["box_wakes_activity"] = res["box_wakes"]["activity"]
        out["rejected_wakes"] = res["rejected_wakes"]
        out["supply_checks"] = res["supply_checks"]
        out["towing_detected"] = res["towing_detected"]
        out["tow_alarm_after_s"] = res.get("tow_alarm_after_s")
        out["records"] = res["records"]
        out["records_lost"] = res["records_lost"]
        out["shutdowns_acked"] = res["shutdowns"]["acked"]
        out["agent_power_cuts"] = res["agent"]["power_cuts"]
        out["cutoffs"] = sum(1 for a in res["alarms"] if a["reason"] == "cutoff")
        for k, ok in targets(res).items():
            out["target " + k] = "met" if ok else "NOT met"
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
