"""Power management (firmware/power.py, docs/power.md): the pure state machine fed timestamped inputs,
the LIS3DH's low-power activity interrupt through the driver against the register-level model, and the
whole firmware replayed over a parked scenario with a simulated agent behind its supply rail
(tools/trace/power.py). Expected values come from the configuration (the schema's defaults), the LIS3DH
datasheet and the scenario's ground truth."""
import gzip
import json

import pytest

from firmware import power as P
from firmware.config import defaults
from hw.compat import VirtualClock
from hw.lis3dh import LIS3DH
from hw.replay import LIS3DHModel

CFG = defaults()
S = 1000
H = 3600 * S


def pm_parked_asleep(now=0, cfg=None):
    """A manager that finished a trip and went to sleep (the agent answered its shutdown)."""
    pm = P.PowerManager(cfg or CFG, now)
    t = now
    while pm.state != P.SLEEP:
        pm.update(t, 0, 12500, 0, 0, 0)
        if pm.ask:
            pm.agent_acked(t)
        t += 100
        assert t < now + 3600 * S
    return pm, t


def sleep_until(pm, t, end, ign=0, mv=12500):
    """Timer wakes (supply checks) until `end` or until the manager stays awake."""
    while t < end and pm.sleep_ms:
        t += pm.sleep_ms
        pm.wake(t, "timer", ign, mv)
    return t


# ---- wake causes ---------------------------------------------------------------------------------
def test_parked_box_sleeps_after_backlog_hold_and_agent_shutdown():
    pm = P.PowerManager(CFG, 0)
    t = 0
    while pm.state != P.SLEEP:
        backlog = 1 if t < 20 * S else 0          # the backlog is sent at 20 s
        pm.update(t, 0, 12500, 0, 0, backlog)
        if pm.ask and t >= 20 * S + 80 * S:      # the agent answers 20 s after it was asked
            pm.agent_acked(t)
        t += 100
    hold = CFG["park_hold_s"] * S
    # asked at backlog end + hold; acked 40 s later; rail off after agent_halt_s
    assert abs(t - (20 * S + hold + 20 * S + P.DEFAULTS["agent_halt_s"] * S)) <= 300
    assert pm.rail == 0 and pm.gnss == 0 and pm.shutdowns == [1, 0]
    assert pm.sleep_ms == P.DEFAULTS["supply_check_s"] * S


def test_agent_that_never_answers_is_cut_after_the_ack_timeout():
    pm = P.PowerManager(CFG, 0)
    t = 0
    asked = None
    while pm.state != P.SLEEP:
        pm.update(t, 0, 12500, 0, 0, 0)
        if pm.ask and asked is None:
            asked = t
        t += 100
    assert t - 100 - asked == P.DEFAULTS["agent_ack_s"] * S
    assert pm.shutdowns == [0, 1]


def test_wake_by_ignition():
    pm, t = pm_parked_asleep()
    pm.wake(t + 5 * S, "ign", 1, 12300)
    assert pm.sleep_ms == 0 and pm.rail == 1 and pm.gnss == 1
    assert pm.update(t + 5 * S + 100, 1, 14200, 0, 1, 0) == 1
    assert pm.state == P.DRIVING
    assert pm.agent_wakes[P.C_IGN] == 1 and sum(pm.agent_wakes) == 1


def test_wake_by_supply_rising_to_engine_level_once_per_rise():
    pm, t = pm_parked_asleep()
    t = sleep_until(pm, t, t + 10 * 60 * S)
    t += pm.sleep_ms
    pm.wake(t, "timer", 0, 14100)          # alternator charging, no ignition line
    assert pm.sleep_ms == 0 and pm.rail == 1
    assert pm.agent_wakes[P.C_SUPPLY] == 1
    # no trip follows (a battery charger): back to sleep, and a supply still high wakes nothing more
    while pm.state != P.SLEEP:
        t += 100
        pm.update(t, 0, 14100, 0, 0, 0)
        if pm.ask:
            pm.agent_acked(t)
    t = sleep_until(pm, t, t + H, mv=14100)
    assert pm.agent_wakes[P.C_SUPPLY] == 1 and pm.state == P.SLEEP


def test_heartbeat_wakes_the_agent_once_per_period():
    pm, t = pm_parked_asleep()
    hb = CFG["heartbeat_h"] * H
    n = 0
    while t < 3 * hb + 60 * S:
        t += pm.sleep_ms
        pm.wake(t, "timer", 0, 12500)
        if pm.sleep_ms == 0:
            assert pm.cause == P.C_HEARTBEAT and pm.gnss == 0  # forwarding only: receiver stays off
            n += 1
            while pm.sleep_ms == 0:
                t += 100
                pm.update(t, 0, 12500, 0, 0, 0)
                if pm.ask:
                    pm.agent_acked(t)
    assert n == 3 and pm.agent_wakes[P.C_HEARTBEAT] == 3


def test_activity_not_confirmed_by_gnss_goes_back_to_sleep_without_the_agent():
    """A door slam, a gust, a car wash: INT1 fires, the GNSS sees no movement."""
    pm, t = pm_parked_asleep()
    t += 30 * 60 * S
    pm.wake(t, "accel", 0, 12500)
    assert pm.sleep_ms == 0 and pm.gnss == 1 and pm.rail == 0
    while pm.sleep_ms == 0:
        t += 100
        pm.update(t, 0, 12500, 0, 0, 0)
        assert pm.rail == 0, "the agent must not wake"
    assert pm.rejected == 1 and sum(pm.agent_wakes) == 0
    assert pm.box_wakes[P.C_ACTIVITY] == 1


def test_activity_confirmed_by_gnss_is_a_tow_reported_within_seconds():
    pm, t = pm_parked_asleep()
    t += 2 * H
    woke = t
    pm.wake(t, "accel", 0, 12500)
    pm.update(t, 0, 12500, 0, 0, 0)
    pm.position(t, 457600000, 48400000)                  # the parking spot
    moving_from = t + 10 * S                             # the truck drives off 10 s after the wake
    tow_at = None
    while t < woke + 60 * S:
        t += 100
        mv = t >= moving_from
        pm.update(t, 0, 12500, mv, 0, 0)
        if pm.out and tow_at is None:
            assert pm.out[-1] == ("tow", 0)
            tow_at = t
    assert tow_at - moving_from <= 5 * S + 100          # the trip-start rule: 5 s of movement
    assert pm.rail == 1 and pm.agent_wakes[P.C_TOW] == 1 and sum(pm.agent_wakes) == 1


def test_geofence_exit_once_when_the_car_leaves_its_parking_spot():
    pm = P.PowerManager(CFG, 0)
    pm.update(0, 0, 12500, 0, 0, 1)
    lat0, lon0 = 457600000, 48400000
    pm.position(0, lat0, lon0)
    r = CFG["geofence_m"]
    # 1e-7 deg of latitude is 0.0111 m: r - 20 m north stays inside, r + 20 m is outside
    pm.position(1000, lat0 + int((r - 20) / 0.0111195), lon0)
    assert pm.out == []
    pm.position(2000, lat0 + int((r + 20) / 0.0111195), lon0)
    assert len(pm.out) == 1 and pm.out[0][0] == "geofence_exit" and abs(pm.out[0][1] - (r + 20)) <= 3
    pm.position(3000, lat0 + int((r + 200) / 0.0111195), lon0)
    assert len(pm.out) == 1


# ---- cut-off -------------------------------------------------------------------------------------
def test_cutoff_after_cutoff_s_below_cutoff_mv_and_hysteresis():
    pm, t = pm_parked_asleep()
    low = CFG["cutoff_mv"] - 100
    t0 = t
    while pm.state != P.CUTOFF:
        t += pm.sleep_ms
        pm.wake(t, "timer", 0, low)
        assert t - t0 < CFG["cutoff_s"] * S + 2 * P.DEFAULTS["supply_check_s"] * S
    assert t - t0 >= CFG["cutoff_s"] * S
    assert pm.out[-1][0] == "cutoff" and pm.wake_accel == 0 and pm.rail == 0
    # back above cutoff_mv but below cutoff_mv + hysteresis: still off
    for _ in range(5):
        t += pm.sleep_ms
        pm.wake(t, "timer", 0, CFG["cutoff_mv"] + CFG["cutoff_hyst_mv"] - 50)
        assert pm.state == P.CUTOFF
    t += pm.sleep_ms
    pm.wake(t, "timer", 0, CFG["cutoff_mv"] + CFG["cutoff_hyst_mv"] + 50)
    assert pm.state == P.SLEEP and pm.out[-1][0] == "cutoff_end"


def test_crank_dips_and_short_sags_never_cut_off():
    pm = P.PowerManager(CFG, 0)
    t = 0
    for k in range(20):               # 20 cold starts: 7.0 V for 1 s with the ignition on
        for _ in range(10):
            pm.update(t, 1, 7000, 0, 0, 0)
            t += 100
        pm.update(t, 1, 14200, 0, 1, 0)
        t += 100
    short = CFG["cutoff_s"] * S - 20 * S  # a sag with the ignition off, shorter than cutoff_s
    end = t + short
    while t < end:
        pm.update(t, 0, CFG["cutoff_mv"] - 500, 0, 1, 0)   # trip still open: awake
        t += 100
    pm.update(t, 0, 12500, 0, 1, 0)
    assert pm.state != P.CUTOFF and all(r != "cutoff" for r, _ in pm.out)


@pytest.mark.parametrize("stuck_mv", [0, 18810])  # ADC at 0 and at full scale (4095 counts x 5.7 divider)
def test_garbage_supply_reading_never_cuts_off_nor_wakes(stuck_mv):
    pm, t = pm_parked_asleep()
    t = sleep_until(pm, t, t + 12 * H, mv=stuck_mv)
    assert pm.state == P.SLEEP, "a stuck ADC must not cut the box off"
    assert pm.agent_wakes[P.C_SUPPLY] == 0 and pm.box_wakes[P.C_SUPPLY] == 0
    assert [r for r, _ in pm.out].count("supply_invalid") == 1 and pm.mv_ok == 0


def test_stuck_ignition_line_is_reported_and_not_believed():
    pm = P.PowerManager(CFG, 0)
    t = 0
    stuck = None
    while t < 2 * CFG.get("ign_stuck_s", P.DEFAULTS["ign_stuck_s"]) * S:
        believed = pm.update(t, 1, 12400, 0, 0, 0)       # ignition reads 1, engine not charging, still
        if pm.out and stuck is None:
            stuck = t
            assert pm.out[-1] == ("ignition_stuck", 1)
        if pm.ask:
            pm.agent_acked(t)
        if pm.state == P.SLEEP:
            break
        t += 100
    assert stuck == P.DEFAULTS["ign_stuck_s"] * S and believed == 0
    assert pm.state == P.SLEEP and pm.wake_ign == 0   # the stuck pin must not wake the box at once
    # the line reads 0 again: believed again
    pm.wake(t + H, "timer", 0, 12400)
    assert pm.ign_stuck == 0


# ---- LIS3DH low-power activity interrupt ---------------------------------------------------------
@pytest.mark.parametrize("range_g,lsb_mg", [(2, 16), (4, 32), (8, 62), (16, 186)])
def test_lis3dh_sleep_mode_registers_and_int1(range_g, lsb_mg):
    clock = VirtualClock(0)
    chip = LIS3DHModel(clock)
    acc = LIS3DH(chip, odr_hz=100, range_g=range_g)
    ths, dur = acc.sleep_mode(250, 300, odr_hz=10)
    r = chip.regs
    # datasheet DocID 17530: CTRL_REG1 ODR 10 Hz = 0010b, LPen bit 3, XYZ; CTRL_REG3 I1_IA1 bit 6;
    # CTRL_REG5 LIR_INT1 bit 3; INT1_CFG XHIE|YHIE|ZHIE = 0x2A; INT1_THS LSB by range; INT1_DURATION 1/ODR
    assert r[0x20] == 0x2F and r[0x22] == 0x40 and r[0x24] == 0x08 and r[0x30] == 0x2A
    assert r[0x21] & 0x01  # HPIS1: the interrupt sees high-pass filtered data
    assert ths == r[0x32] == max(1, (250 + lsb_mg // 2) // lsb_mg) and dur == r[0x33] == 3
    chip.activity(ths * lsb_mg - 1, 1000)          # below the threshold
    assert chip.int1 == 0
    chip.activity(ths * lsb_mg + 1, 200)           # above, but shorter than INT1_DURATION
    assert chip.int1 == 0
    chip.activity(ths * lsb_mg + 1, 400)
    assert chip.int1 == 1
    assert acc.int1_source() & 0x40 and chip.int1 == 0   # latched, cleared by reading INT1_SRC
    acc.setup()                                    # back to the FIFO stream: the interrupt is off
    chip.activity(2000, 1000)
    assert chip.int1 == 0 and r[0x22] == 0


# ---- the firmware replayed over parked days, with the agent model ---------------------------------
DAYS = 2


@pytest.fixture(scope="module")
def parked(tmp_path_factory):
    from tools.sim.engine import simulate

    p = str(tmp_path_factory.mktemp("parked") / "parked.jsonl.gz")
    # seed 1 (the bench's): its tow's winch raises a harsh-looking acceleration on the waking box
    truth = simulate(p, "parked_week", seed=1, duration_s=DAYS * 86400.0)
    return p, truth


def _truth(path, kind):
    out = []
    with gzip.open(path, "rb") as f:
        for line in f:
            if b'"truth"' in line:
                o = json.loads(line)
                if o.get("kind") == kind:
                    out.append(o)
    return out


def test_replayed_trace_carries_interrupts_not_samples(parked):
    path, truth = parked
    n_accel = n_int = n_gnss = 0
    with gzip.open(path, "rb") as f:
        hdr = json.loads(f.readline())
        for line in f:
            n_accel += b'"s":"accel"' in line
            n_int += b'"s":"accel_int"' in line
            n_gnss += b'"s":"gnss"' in line
    assert "sleep" in hdr
    # 1-s accel chunks and 1 Hz GNSS only while something happens: under 5 % of the two days
    assert n_accel < 0.05 * DAYS * 86400 and n_gnss < 0.05 * DAYS * 86400
    assert n_int > 0


def test_replayed_days_wake_causes_false_wakes_tow_and_nothing_lost(parked):
    from tools.trace.power import attribute, run_power

    path, truth = parked
    res = attribute(run_power(path), path)
    trips = [t for t in _truth(path, "trip")]
    dist = _truth(path, "disturbance")
    kinds = {d["type"] for d in dist}
    assert {"door_slam", "wind", "car_wash", "tow"} <= kinds
    w = res["agent_wakes"]
    # every drive by ignition wakes the agent once; the box is often awake already (the driver's door)
    assert w["ignition"] == len(trips)
    # every heartbeat_h up to the trace's end (the agent was off at midnight)
    assert w["heartbeat"] == int(truth["duration_s"] // (CFG["heartbeat_h"] * 3600))
    assert w["door_slam"] == 0 and w["wind"] == 0 and w["car_wash"] == 0 and w["supply"] == 0
    assert res["box_wakes"]["activity"] >= 1 and res["rejected_wakes"] >= 1
    # the tow: caught, reported within seconds of the movement (truth towing event), the agent woken
    assert res["towing_detected"] == 1 and w["tow"] == 1
    assert res["tow_alarm_after_s"] is not None and res["tow_alarm_after_s"] <= 10
    assert any(a["reason"] == "geofence_exit" for a in res["alarms"])
    # the tow truck's winch shook the parked car before the tow: nothing outside a trip is a harsh-driving
    # event (charged to the driver: Traccar's green driving, the consumer's events), a shock is all it is
    harsh = ("harsh_accel", "harsh_brake", "harsh_corner_left", "harsh_corner_right", "unclassified")
    loose = res["events_outside_trips"]
    assert not [k for k in loose if k.startswith(harsh)], loose
    assert loose.get("shock", 0) >= 1, loose  # the scenario still shakes the car hard enough to matter
    assert res["towing_detected"] == 1  # and the tow alarm stays
    assert res["records_lost"] == 0 and res["records_on_agent"] > 0
    # one trip per drive plus the tow: a movement from before a sleep (hours ago) must not end the
    # next drive's trip at once (it did: a burst of 0-s trips between the ignition and moving off)
    assert res["trips"] == len(trips) + 1
    assert res["shutdowns"]["acked"] == res["agent"]["shutdown_cmds"] > 0
    assert res["agent"]["power_cuts"] == 0
    assert res["avg_parked_ma"] <= 2.0


@pytest.mark.parametrize("cut_at", ["asked", "synced"])
def test_power_cut_in_the_middle_of_the_shutdown_handshake_loses_nothing(parked, cut_at):
    """The agent loses its supply when the shutdown command arrives, or after it synced its queue but
    before it answered: the box times out, cuts the rail, and what was not acknowledged goes at the
    next wake; what was acknowledged is in the agent's SQLite."""
    from tools.trace.power import run_power

    path, _ = parked
    res = run_power(path, cut_at=cut_at)
    assert res["agent"]["power_cuts"] == res["agent"]["shutdown_cmds"] > 0
    assert res["shutdowns"]["acked"] == 0 and res["shutdowns"]["timed_out"] > 0
    assert res["records_lost"] == 0
