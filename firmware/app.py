# The box's supervisor: wires GNSS, accelerometer, trips, records, store and link together.
#
# `Box.step()` is one pass of the main loop (call it every ~100 ms of box time). It is the only
# firmware code that reads the clock (through the clock object it is given) and the only layer that
# retries or degrades: a missing accelerometer or a silent GNSS becomes a tamper record, not a crash.
import json
import os

from firmware import VERSION, codec
from firmware.motion import DEFAULTS as _MOTION_KEYS
from firmware.motion import Motion
from firmware.nmea import NMEAParser
from firmware.odometer import DEFAULTS as _ODO_KEYS
from firmware.odometer import Odometer
from firmware.score import parts as score_trip
from firmware.store import Store
from firmware.trip import DEFAULTS as _TRIP_KEYS
from firmware.trip import TripTracker
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(accel_fault=0, accel_missing=0, accel_outages=0, accel_overruns=0, accel_range_g=0,
         accel_rate_hz=0, accel_reinits=0, accel_restored=0, block_max_bytes=0, blocks_lost=0,
         calib_commit=0, calib_quality=0, course_cdeg=0, crash_threshold_mg=0, distance_mm=0,
         evicted_records=0, gnss_missing=0, idle_event_s=0, installer_pin=0, link_acked_blocks=0,
         link_errors=0, loop_faults=0, motion_fault=0, motion_faults=0, odometer_mm=0,
         pos_course_step_cdeg=0, pos_speed_step_mmps=0, pos_tolerance_m=0, reboot_loop=0, speed_end_mmps=0,
         speed_start_mmps=0, state_errors=0, status_interval_s=0, store_blocks=0, store_errors=0,
         store_evicted=0, store_fault=0, store_max_bytes=0, store_max_kb=0, store_segment_bytes=0,
         unaccounted_distance=0, unclassified=0)

# GNSS read buffer: one pass's bytes at the GNSS baud rate (96 at 9600), 512 at most
_UART_BUF_MAX = const(512)
_BLOCK_MAX_AGE_MS = const(60000)   # a block is committed at the latest 60 s after its first record
_STATUS_EVERY_MS = const(600000)   # status record every 10 minutes (config status_interval_s)
_GNSS_SILENT_MS = const(30000)     # no GNSS byte for 30 s: tamper gnss_missing
_STATE_EVERY_MS = const(60000)     # persist odometer / calibration every minute while driving
_UNACCOUNTED_MIN_MM = const(500000)  # car moved >= 500 m while the box was off
_POS_INTERVAL_MS = const(1000)  # position records at 1 Hz whatever the receiver rate
_NMEA_IDLE_MS = const(300)
_CRASH_BLOCK_MAX = const(16384)    # = framing.MAX_BLOCK: the largest block the link carries
# record priorities in the store (docs/architecture.md)
_PRIO = {"pos": 0, "event": 1, "status": 1, "trip_start": 2, "trip_end": 2, "odometer": 2,
         "config": 2, "tamper": 3, "crash": 4}

_EVENT_KINDS = ("harsh_accel", "harsh_brake", "harsh_corner_left", "harsh_corner_right", "overspeed", "idle",
                "towing", "unclassified", "shock", "harsh_accel_gnss", "harsh_brake_gnss")
# The two records of the hot path, allocated once (at import) and refilled for each record: the
# encoder reads a record and keeps nothing of it. On a full heap a new event dict (13 slots, 208 B)
# was what failed (the event lost), and every position made a 160 B dict. Every key is set each time.
_POS_REC = {"type": "pos", "t_ms": 0, "utc_s": -1, "lat_e7": 0, "lon_e7": 0, "speed_mmps": 0,
            "course_cdeg": 0, "hdop_x10": 0, "sats": 0, "seq": 0}
_EVENT_REC = {"type": "event", "kind": "", "t_ms": 0, "dur_ms": 0, "peak_mg": 0, "mean_mg": 0,
              "speed_start_mmps": 0, "speed_end_mmps": 0, "lat_e7": 0, "lon_e7": 0, "course_cdeg": 0,
              "utc_s": -1, "seq": 0}

# the settings the Box reads after boot (self.cfg): the block encoder's key, power management's wake-up
_RUN_KEYS = ("block_max_bytes", "privacy", "pos_tolerance_m", "pos_speed_step_mmps", "pos_course_step_cdeg",
             "wake_mg", "wake_ms")

# internal sizes (not installer settings; overridable by replay/bench tunables of the same name)
_STORE_SEGMENT_BYTES = const(32768)  # largest segment
_BLOCK_MAX_BYTES = const(512)
# I2C fault handling: after a failed accelerometer read the supervisor retries after
# _ACCEL_RETRY_MS, doubling on every further failure up to _ACCEL_RETRY_MAX_MS
_ACCEL_RETRY_MS = const(100)
_ACCEL_RETRY_MAX_MS = const(10000)
# flash faults: a refused block is retried after _STORE_RETRY_MS, doubling up to _STORE_RETRY_MAX_MS;
# at most _UNSTORED_MAX blocks (<= 512 B each) wait in RAM
_STORE_RETRY_MS = const(1000)
_STORE_RETRY_MAX_MS = const(60000)
_UNSTORED_MAX = const(8)
_STABLE_MS = const(300000)   # a boot that ran 5 minutes was not part of a reboot loop
_LOOP_RESETS = const(3)      # this many quick non-power-on resets in a row: tamper reboot_loop


def _subset(cfg, keys):
    out = {}
    for k in keys:
        if k in cfg:
            out[k] = cfg[k]
    return out


def subsystem_configs(cfg):
    """The installer's config keys (firmware/config.py) -> each subsystem's own config dict."""
    motion = _subset(cfg, _MOTION_KEYS)
    if "crash_g" in cfg:
        motion["crash_threshold_mg"] = int(cfg["crash_g"] * 1000 + 0.5)
    trip = _subset(cfg, _TRIP_KEYS)
    if "idle_s" in cfg:
        trip["idle_event_s"] = cfg["idle_s"]
    return _subset(cfg, _ODO_KEYS), motion, trip


def _join(a, b):
    return a + "/" + b if a else b


def load_state(root):
    """Persisted box state (boot count, odometer, calibration). Written atomically by save_state:
    a power cut leaves the old or the new file, never a torn one."""
    for name in ("state.json", "state.tmp"):
        try:
            with open(_join(root, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    return {}


def save_state(root, state):
    tmp = _join(root, "state.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.rename(tmp, _join(root, "state.json"))


class Box:
    def __init__(self, clock, gnss_uart, i2c, power, fs_root, config=None, link_uart=None, reset_cause=None,
                 can_sleep=False, agent_rail=None, gnss_power=None):
        # config: every installer setting (Runner.settings(): the config schema's defaults, the one
        # table, under config.json), and the replay's tunables; the Box adds its derived sizes to it.
        # (Not merged with the schema here: loading it at this point, between the modules and the
        # Box's first big buffer, left the codec models no hole on a 92K heap.)
        # every one of the Box's 47 names first, before any buffer: its instance dict grows through its
        # smaller tables here, on an empty heap, and not to its 47 slots (752 B) between the boot's buffers
        # (a 96K heap had no hole left for it there). A name added to the Box is added here too.
        self.cfg = self.clock = self.gnss_uart = self.power = self.root = self.device = self.boot = None
        self.quick_resets = self._boot_ms = self._persist = self._spare_enc = self._spare_key = None
        self.enc = self.accel = self.motion = self._motion_cfg = self.faults = self._unstored = None
        self._store_down_ms = self._store_retry_at = self._store_backoff = self._accel_down_ms = None
        self._accel_retry_at = self._accel_backoff = self.store = self._enc_prio = self._enc_t0 = None
        self.records_count = self.records_bytes = self.pos_count = self.blocks = self.tampers = None
        self.loose_events = self.parser = self.odo = self.trip = self._uart_buf = self._last_gnss_ms = None
        self._gnss_missing_reported = self._first_good_fix = self._last_pos_ms = self._last_status_ms = None
        self._status_every_ms = self._last_state_ms = self._last_step_ms = self.link = self.pmio = None
        cfg = config
        if "store_max_bytes" not in cfg:
            cfg["store_max_bytes"] = cfg["store_max_kb"] * 1024
        if "store_segment_bytes" not in cfg:
            # segments of 1/8 of the store (32 KiB at most): eviction frees one segment at a time
            cfg["store_segment_bytes"] = min(_STORE_SEGMENT_BYTES, cfg["store_max_bytes"] // 8)
        if "block_max_bytes" not in cfg:
            cfg["block_max_bytes"] = _BLOCK_MAX_BYTES
        # the settings read after boot (block key, power management); the full table is not kept
        self.cfg = _subset(cfg, _RUN_KEYS)
        self.clock = clock
        self.gnss_uart = gnss_uart
        self.power = power
        self.root = fs_root
        self.device = cfg["device_id"]
        st = load_state(fs_root)
        self.boot = st.get("boot", 0) + 1
        st["boot"] = self.boot
        # reboot loop: a reset that was not a power-on (watchdog, crash, soft reset) before the last
        # boot had run _STABLE_MS is one more quick reset; _LOOP_RESETS in a row are reported
        quick = st.get("stable", 1) == 0 and reset_cause is not None and reset_cause != "power_on"
        self.quick_resets = st.get("quick_resets", 0) + 1 if quick else 0
        st["quick_resets"] = self.quick_resets
        st["stable"] = 0  # the step reads it there (not an attribute: see the names note below)
        self._boot_ms = clock.ticks_ms()
        try:
            save_state(fs_root, st)
        except OSError:  # flash full: the box records anyway (boot count saved with the next state)
            pass
        # the Box's names: its instance dict holds 47 in a 47-slot table (752 B on the 64-bit VM); a
        # 48th grows it to 59 slots (944 B, both tables live during the rehash, at boot): a value
        # read once is a local or lives in a table the Box already has (the boot's "stable" in st)
        self._persist = st
        now = clock.ticks_ms()

        # the long-lived big buffers first, while the heap is unfragmented: the block encoder
        # (range coder models) and, below, the motion crash ring
        self._spare_enc = None
        self._spare_key = None
        self.enc = None
        self._new_block(clock.ticks_ms())
        self.enc = None
        # then the accelerometer and Motion (its crash ring), before the store's mount litters the heap
        self.accel = None
        self.motion = None
        odo_cfg, motion_cfg, trip_cfg = subsystem_configs(cfg)
        self._motion_cfg = motion_cfg
        rate = cfg["accel_rate_hz"]
        # supervisor fault counters (status and summary): failed accelerometer reads, outages
        self.faults = {"i2c_errors": 0, "accel_outages": 0, "accel_reinits": 0, "store_errors": 0,
                       "blocks_lost": 0, "state_errors": 0, "link_errors": 0, "loop_faults": 0,
                       "motion_faults": 0}
        self._unstored = []  # [block, first_seq, last_seq, prio, count] the store refused (flash fault)
        self._store_down_ms = -1
        self._store_retry_at = 0
        self._store_backoff = _STORE_RETRY_MS
        self._accel_down_ms = -1  # box time the current accelerometer outage began (-1: none)
        self._accel_retry_at = 0
        self._accel_backoff = _ACCEL_RETRY_MS
        if i2c is not None:
            try:
                from hw.lis3dh import LIS3DH

                self.accel = LIS3DH(i2c, odr_hz=rate, range_g=cfg["accel_range_g"])
            except OSError:
                self.accel = None
        if self.accel is not None:
            self.motion = Motion(rate, motion_cfg, on_event=self._on_motion_event, state=st.get("motion"))
        self.store = Store(_join(fs_root, "store"), cfg["store_max_bytes"], cfg["store_segment_bytes"])
        self._enc_prio = 0
        self._enc_t0 = 0
        self.records_count = 0
        self.records_bytes = 0
        self.pos_count = 0
        self.blocks = 0
        self.tampers = []  # (bounded) tamper records of this boot, for the replay report
        self.loose_events = []  # (bounded) motion events outside any trip (a box dropped while parked)

        # the main loop reads the UART every ~100 ms, so an epoch's bytes span several feeds: the
        # parser's "quiet line ends the epoch" fallback must wait longer than one loop period
        self.parser = NMEAParser(on_fix=self._on_fix, idle_ms=_NMEA_IDLE_MS)
        self.odo = Odometer(odo_cfg, st.get("odo"))
        self.trip = TripTracker(trip_cfg, emit=self._emit, score_fn=score_trip, before_end=self._flush_motion)
        self._uart_buf = bytearray(min(_UART_BUF_MAX, (cfg["gnss_baud"] // 100 + 31) // 32 * 32))
        self._last_gnss_ms = now
        self._gnss_missing_reported = False
        self._first_good_fix = True
        self._last_pos_ms = -_POS_INTERVAL_MS
        self._last_status_ms = now
        self._status_every_ms = cfg.get("status_interval_s", _STATUS_EVERY_MS // 1000) * 1000
        self._last_state_ms = now
        self._last_step_ms = now

        self.link = None
        if link_uart is not None:
            from firmware.link import BoxLink

            self.link = BoxLink(link_uart, self.store, self.device, VERSION, self.boot,
                                max_block=_CRASH_BLOCK_MAX)

        # power management (firmware/power.py): on a board that can sleep and reads its power inputs.
        # One attribute only (its state and code live in firmware/powerio.py, loaded only then): the
        # Box's attribute table is at its size limit
        self.pmio = None
        if can_sleep and power is not None:
            from firmware.powerio import PowerIO

            self.pmio = PowerIO(cfg, now, agent_rail, gnss_power)
            self.pmio.rails()

        self._emit_status(now)
        if self.accel is None:
            self._tamper(now, "accel_missing", 0)
        if self.quick_resets >= _LOOP_RESETS:
            self._tamper(now, "reboot_loop", self.quick_resets)

    # ---- main loop ----
    def step(self):
        now = self.clock.ticks_ms()
        uart = self.gnss_uart
        buf = self._uart_buf
        parser = self.parser
        got = 0
        while uart.any():
            n = uart.readinto(buf)
            if not n:
                break
            got += n
            self._last_gnss_ms = now
            parser.feed(buf, n, now)
        if not got:
            parser.feed(buf, 0, now)  # lets a quiet line close the epoch
        if not self._gnss_missing_reported and now - self._last_gnss_ms >= _GNSS_SILENT_MS:
            self._gnss_missing_reported = True
            self._tamper(now, "gnss_missing", 0)
        accel = self.accel
        if accel is not None and (self._accel_down_ms < 0 or now >= self._accel_retry_at):
            k = self._read_accel(now)
            motion = self.motion
            if motion is not None:
                try:
                    if k:
                        # the last sample of a FIFO read is the newest one: now; the others go back
                        # at the sample period, the same spacing Motion gives a chunk ((i * 1000) //
                        # rate: 2.5 ms at 400 Hz, not 1000 // 400 = 2, which stamped every read
                        # 10-15 ms into the future)
                        motion.feed(now - (k - 1) * 1000 // accel.odr_hz, accel.xyz_mg, k)
                    motion.poll()
                except Exception as e:  # noqa: BLE001 (motion is not billing: _motion_fault)
                    self._motion_fault(now, e)
        trip = self.trip
        power = self.power
        if power is not None:
            ign = power.ignition()
            mv = power.supply_mv()
            if self.pmio is not None:
                ign = self.pmio.step(self, now, ign, mv)  # the ignition as believed (a stuck line is not)
            trip.on_power(now, ign, mv)
        trip.tick(now)
        if self.enc is not None and now - self._enc_t0 >= _BLOCK_MAX_AGE_MS:
            self.flush()
        if now - self._last_status_ms >= self._status_every_ms:
            self._emit_status(now)
        if self.trip.state and now - self._last_state_ms >= _STATE_EVERY_MS:
            self._save_state(now)
        if self._unstored:
            self._retry_store(now)
        if not self._persist["stable"] and now - self._boot_ms >= _STABLE_MS:
            self._persist["stable"] = 1
            self._persist["quick_resets"] = 0
            self._save_state(now)
        if self.link is not None:
            try:
                self.link.poll(now)
            except OSError:  # link UART fault, or the store could not record an ack: next pass retries
                self.faults["link_errors"] += 1
        self._last_step_ms = now

    def _read_accel(self, now):
        """One FIFO read, guarded: an I2C OSError never leaves the loop. The first failure of an
        outage is a tamper record `accel_fault` (value: errno); retries back off from 100 ms to 10 s.
        When the chip answers again it is set up anew (a chip that lost power lost its registers)
        and a tamper record `accel_restored` (value: outage ms) closes the outage."""
        accel = self.accel
        try:
            if self._accel_down_ms >= 0:
                accel.setup()
                self.faults["accel_reinits"] += 1
            k = accel.read_fifo()
        except OSError as e:
            self.faults["i2c_errors"] += 1
            if self._accel_down_ms < 0:
                self._accel_down_ms = now
                self._accel_backoff = _ACCEL_RETRY_MS
                self.faults["accel_outages"] += 1
                code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
                self._tamper(now, "accel_fault", code)
            else:
                self._accel_backoff = min(self._accel_backoff * 2, _ACCEL_RETRY_MAX_MS)
            self._accel_retry_at = now + self._accel_backoff
            accel.count = 0
            return 0
        if self._accel_down_ms >= 0:
            self._tamper(now, "accel_restored", now - self._accel_down_ms)
            self._accel_down_ms = -1
        return k

    def restart_calibration(self):
        """Console `calibrate`: forget the mounting calibration and learn it again from driving."""
        if self.accel is None:
            return
        self.motion = Motion(self.accel.odr_hz, self._motion_cfg, on_event=self._on_motion_event, state=None)

    def shutdown(self):
        """Power is going (supercap time): close the trip, commit everything, persist state."""
        now = self.clock.ticks_ms()
        m = self.motion
        if m is not None:
            if self.trip.trip is not None:
                # what the trip's end does first (before_end), done here: the events motion holds
                # go into the trip (a second flush at the trip's end finds nothing), then
                self._flush_motion()
            # the crash ring (6 KB at 100 Hz) goes back to the heap for the trip's summary: no
            # sample comes after the power-off (a crash still recording was closed by the flush)
            m.close()
        self.trip.shutdown(now)
        self.flush()
        self._save_state(now)
        # the block encoder (7 KB: range coder models) goes back to the heap for what follows (the
        # summary, the link draining); a record after this builds a new one
        self.enc = None
        self._spare_enc = None
        self._spare_key = None

    # ---- inputs ----
    def _on_fix(self, fix):
        moving = self.motion.moving if self.motion is not None else -1
        if self._first_good_fix and self.odo.good(fix):
            # before the odometer takes this fix as its new last position: did the car move while
            # the box was off? (unplugging the box is how pay-per-km is cheated)
            self._first_good_fix = False
            mm = self.odo.unaccounted_mm(fix)
            if mm >= _UNACCOUNTED_MIN_MM:
                self._tamper(fix.t_ms, "unaccounted_distance", mm)
        accepted0 = self.odo.counters["accepted"]
        bridged0 = self.odo.bridged_mm
        credited = self.odo.on_fix(fix, moving)
        if self.motion is not None:
            try:
                self.motion.on_fix(fix)
            except Exception as e:  # noqa: BLE001 (motion is not billing: _motion_fault)
                self._motion_fault(fix.t_ms, e)
        # a fix the odometer's quality gate dropped ((0,0), jump, HDOP...) is not a position either
        good = self.odo.counters["accepted"] > accepted0
        self.trip.on_fix(fix.t_ms, good, fix.utc_s, fix.lat_e7, fix.lon_e7, fix.speed_mmps, fix.course_cdeg,
                         credited, self.odo.bridged_mm - bridged0)
        if good and self.trip.state and fix.t_ms - self._last_pos_ms >= _POS_INTERVAL_MS - 50:
            self._last_pos_ms = fix.t_ms
            self.pos_count += 1
            rec = _POS_REC
            rec["t_ms"] = fix.t_ms
            rec["utc_s"] = fix.utc_s
            rec["lat_e7"] = fix.lat_e7
            rec["lon_e7"] = fix.lon_e7
            rec["speed_mmps"] = max(fix.speed_mmps, 0)
            rec["course_cdeg"] = max(fix.course_cdeg, 0)
            rec["hdop_x10"] = max(fix.hdop_x10, 0)
            rec["sats"] = max(fix.sats, 0)
            self._emit(rec)

    def _on_motion_event(self, ev):
        lf = self.trip.last_fix
        kind = ev["type"]
        if kind == "crash":
            rec = {"type": "crash", "t_ms": ev["t_ms"], "peak_mg": ev.get("peak_mg", 0),
                   "lat_e7": lf[2] if lf else 0, "lon_e7": lf[3] if lf else 0,
                   "speed_mmps": max(ev.get("speed_start_mmps", 0), 0), "rate_hz": ev.get("rate_hz", 0),
                   "pre_ms": ev.get("pre_ms", 0), "samples": ev.pop("trace", b""), "utc_s": -1, "seq": 0}
        else:
            if ev.get("src") == "gnss":
                kind = kind + "_gnss"   # from the GNSS speed alone (mount not calibrated)
            if kind not in _EVENT_KINDS:
                kind = "unclassified"
            if self.trip.nobody_driving(ev["t_ms"]):
                # ignition and engine off (a tow truck's winch, the car shaken while parked): a shock,
                # never a harsh-driving event charged to the driver (docs/power.md); not a trip's event
                kind = "shock"
            rec = _EVENT_REC
            rec["kind"] = kind
            rec["t_ms"] = ev["t_ms"]
            rec["dur_ms"] = ev.get("dur_ms", 0)
            rec["peak_mg"] = ev.get("peak_mg", 0)
            rec["mean_mg"] = ev.get("mean_mg", 0)
            rec["speed_start_mmps"] = max(ev.get("speed_start_mmps", 0), 0)
            rec["speed_end_mmps"] = max(ev.get("speed_end_mmps", 0), 0)
            rec["lat_e7"] = ev.get("lat_e7", lf[2] if lf else 0)
            rec["lon_e7"] = ev.get("lon_e7", lf[3] if lf else 0)
            rec["course_cdeg"] = max(ev.get("course_cdeg", 0), 0)
        rec["utc_s"] = lf[1] - (lf[0] - ev["t_ms"]) // 1000 if (lf and lf[1] >= 0) else -1
        self._emit(rec)
        if kind != "shock" or ev["type"] == "shock":
            self.trip.on_event(ev)
        if self.trip.trip is None and len(self.loose_events) < 16:
            self.loose_events.append({"type": kind, "t_ms": ev["t_ms"], "dur_ms": ev.get("dur_ms", 0),
                                      "peak_mg": ev.get("peak_mg", 0)})
        if kind == "crash":
            # a crash is committed at once. Its trace (Motion's frozen ring, valid until the next feed();
            # popped from the event, which the trip keeps) is in the block now: not held any longer
            del rec
            self.flush()

    def _flush_motion(self):
        # trip end, before its summary: events motion still holds (pending their speed check, or
        # held for want of a calibration: they go out as `unclassified`) are emitted now, inside the
        # trip, so the trip_end counts and score include them
        if self.motion is not None:
            try:
                self.motion.flush()
            except Exception as e:  # noqa: BLE001 (the trip still ends: _motion_fault)
                self._motion_fault(self.clock.ticks_ms(), e)

    def _motion_fault(self, t_ms, e):
        # A fault inside motion (calibration's floats with the heap full, an I2C sample it cannot
        # use, a bug): counted, the first three of a boot as tamper records `motion_fault` (value:
        # errno, else 0). The fix that was being handled still goes to the odometer and the trip,
        # and the rest of the UART read to the parser: billed km never wait on motion. No backoff:
        # the next feed, poll or fix is the retry (what failed was one call's transient heap).
        f = self.faults
        f["motion_faults"] += 1
        if f["motion_faults"] <= 3:
            try:
                self._tamper(t_ms, "motion_fault", e.args[0] if e.args and isinstance(e.args[0], int) else 0)
            except (OSError, MemoryError):
                pass

    # ---- records ----
    def _tamper(self, t_ms, reason, value):
        """A tamper record (reason: a short name; value: an int). Returns the seq."""
        return self._emit({"type": "tamper", "t_ms": t_ms, "reason": reason, "value": value, "utc_s": -1,
                           "seq": 0})

    def _emit(self, rec):
        """Give a record its sequence number and encode it into the open block. Returns the seq.
        Records come with their "utc_s" and "seq" keys (pos and event: _POS_REC and _EVENT_REC, refilled;
        the others: literals with both keys): a dict literal's table has exactly its keys' slots, and
        one key more rehashes it into a second, larger table (an event's 11 -> 12 -> 17 slots, 272 B,
        with the heap at its fullest). The encoder keeps nothing of a record."""
        if "utc_s" not in rec:
            rec["utc_s"] = -1
        seq = self.store.next_seq()
        rec["seq"] = seq
        if rec["type"] == "trip_start":
            rec["trip"] = seq
        crash = rec["type"] == "crash"
        # a crash trace (10 s of raw samples) gets a block sized for it: its samples (8 bits each in
        # the block) and 256 B for the header and the other fields, not the largest block the link
        # carries (16 KiB; a 10 s trace at 100 Hz is 6 KB)
        cb = min(_CRASH_BLOCK_MAX, len(rec["samples"]) + 256) if crash else 0
        if self.enc is None:
            self._new_block(rec["t_ms"], cb)
        dropped = self.enc.dropped
        if not self.enc.add(rec):
            self.flush()
            # a crash trace gets a block of its own, sized for it (the largest the link carries if
            # the sized one was too small)
            self._new_block(rec["t_ms"], cb)
            dropped = self.enc.dropped
            if not self.enc.add(rec):
                if crash and cb < _CRASH_BLOCK_MAX:
                    self.enc = None
                    self._new_block(rec["t_ms"], _CRASH_BLOCK_MAX)
                if not (crash and self.enc.add(rec)):
                    raise ValueError("record too large for a block: " + rec["type"])
        if self.enc.dropped != dropped:
            # dropped by the privacy / thinning mode: its seq is given back, so the seqs of a boot stay
            # contiguous and a consumer can tell a gap (lost data) from a dropped position
            self.store.unget_seq(seq)
            return seq
        if (self.enc.count == 1 and rec["type"] != "status") or rec["type"] == "trip_start":
            # every block carries the box's odometer right after its first record (so the block's
            # base position stays the first record's), and so does a trip start (the odometer at the
            # trip's start time): a block read alone (the edge agent's
            # Traccar output, a consumer) knows the total distance of its records. (A full block
            # leaves it out: the next record opens a new block with its own.)
            total_mm = self.odo.total_mm
            if rec["type"] == "trip_start":
                # the odometer at the trip's start time: the distance counted while the start was being
                # confirmed is the trip's; a second record then gives the odometer now
                total_mm -= self.trip.trip["distance_mm"]
            if self.enc.add({"type": "odometer", "t_ms": rec["t_ms"], "utc_s": rec["utc_s"],
                             "seq": self.store.next_seq(), "total_m": total_mm // 1000}):
                self.records_count += 1
                if total_mm // 1000 != self.odo.total_mm // 1000 and self.enc.add(
                        {"type": "odometer", "t_ms": self.clock.ticks_ms(), "utc_s": -1,
                         "seq": self.store.next_seq(), "total_m": self.odo.total_mm // 1000}):
                    self.records_count += 1
        if rec["type"] == "tamper" and len(self.tampers) < 16:
            self.tampers.append({"reason": rec["reason"], "value": rec["value"], "t_ms": rec["t_ms"]})
        p = _PRIO.get(rec["type"], 1)
        if p > self._enc_prio:
            self._enc_prio = p
        self.records_count += 1
        return seq

    def _new_block(self, t_ms, max_bytes=0):
        # privacy and bounded-error modes act here, before anything is stored; the odometer has already
        # counted every fix, so billing never depends on them
        key = (max_bytes or self.cfg["block_max_bytes"], self.cfg.get("privacy", "off"),
               self.cfg.get("pos_tolerance_m", 0), self.cfg.get("pos_speed_step_mmps", 1),
               self.cfg.get("pos_course_step_cdeg", 1))
        # the encoder (range coder models, ~12 KB) is reused while its settings stay the same
        if self._spare_enc is not None and self._spare_key == key:
            self.enc = self._spare_enc
            self.enc.reset()
        else:
            # the spare goes before the new one is made: a crash block's encoder (its buffer and
            # models) is not built beside the usual one's (7 KB)
            self._spare_enc = None
            self._spare_key = None
            self.enc = codec.BlockEncoder(self.device, self.boot, key[0], privacy=key[1], tolerance_m=key[2],
                                          speed_q_mmps=key[3], course_q_cdeg=key[4])
            self._spare_enc = self.enc
            self._spare_key = key
        self._enc_prio = 0
        self._enc_t0 = self.clock.ticks_ms()

    def flush(self):
        """Commit the open block to the store (durable when this returns)."""
        enc = self.enc
        if enc is None or enc.count == 0:
            return
        block = enc.finish_view()   # in the encoder's buffer: stored (or copied) before any add()
        self.enc = None
        self.records_bytes += len(block)
        self.blocks += 1
        self._store_block(block, enc.first_seq, enc.last_seq, self._enc_prio, enc.count)

    def _store_block(self, block, first_seq, last_seq, prio, count):
        """Append to the store; a flash fault (OSError: full, worn, corrupt) or no heap for the
        store's index (MemoryError, raised before anything is written) never leaves the loop: the block
        waits in RAM (at most _UNSTORED_MAX, the oldest of the lowest priority goes first) and is
        retried with backoff; the first failure of an outage is a tamper record `store_fault`."""
        if self._unstored:
            self._unstored.append([bytes(block), first_seq, last_seq, prio, count])
            self._retry_store(self.clock.ticks_ms(), 1)
            return
        try:
            self.store.append(block, first_seq, last_seq, prio, count)
        except (OSError, MemoryError) as e:
            self._unstored.append([bytes(block), first_seq, last_seq, prio, count])
            self._store_failed(e)

    def _store_failed(self, e):
        now = self.clock.ticks_ms()
        self.faults["store_errors"] += 1
        if len(self._unstored) > _UNSTORED_MAX:
            lo = 0
            for i in range(len(self._unstored)):
                if self._unstored[i][3] < self._unstored[lo][3]:
                    lo = i
            self._unstored.pop(lo)
            self.faults["blocks_lost"] += 1
        if self._store_down_ms < 0:
            self._store_down_ms = now
            self._store_backoff = _STORE_RETRY_MS
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            self._tamper(now, "store_fault", code)
        else:
            self._store_backoff = min(self._store_backoff * 2, _STORE_RETRY_MAX_MS)
        self._store_retry_at = now + self._store_backoff

    def _retry_store(self, now, force=0):
        if not force and now < self._store_retry_at:
            return
        q = self._unstored
        while q:
            b = q[0]
            try:
                self.store.append(b[0], b[1], b[2], b[3], b[4])
            except (OSError, MemoryError) as e:
                self._store_failed(e)
                return
            q.pop(0)
        self._store_down_ms = -1

    def _emit_status(self, now):
        self._last_status_ms = now
        st = self.store.stats()
        self._emit({"type": "status", "t_ms": now, "fw": VERSION, "boot": self.boot,
                    "store_used": st.get("used_bytes", 0), "store_evicted": st.get("evicted_records", 0),
                    "gnss_ok": 0 if self._gnss_missing_reported else 1,
                    "accel_ok": 1 if self.accel is not None and self._accel_down_ms < 0 else 0,
                    "odometer_m": self.odo.total_mm // 1000,
                    "calib": self.motion.calib_state if self.motion else "none",
                    "calib_quality": self.motion.calib_quality if self.motion else 0,
                    "supply_mv": self.power.supply_mv() if self.power is not None else -1, "utc_s": -1,
                    "seq": 0})

    def _save_state(self, now):
        self._last_state_ms = now
        st = self._persist
        try:
            st["odo"] = self.odo.state()
            if self.motion is not None:
                st["motion"] = self.motion.state()
            save_state(self.root, st)
        except (OSError, MemoryError):
            # flash full or failing, or no heap for the state's dicts and text: the next save tries
            # again (the store reports a flash fault; the odometer's total is in every block too)
            self.faults["state_errors"] += 1

    # ---- reporting ----
    def status(self):
        """For the installer console and `paydbox config PORT status`: ints and strings only."""
        lf = self.trip.last_fix
        fix = self.parser.fix
        st = self.store.stats()
        out = {
            "fw": VERSION, "device_id": self.device, "boot": self.boot,
            "gnss_fix": 1 if lf else 0, "gnss_bytes": self.parser.counters.get("sentences", 0),
            "sats": fix.sats, "hdop_x10": fix.hdop_x10,
            "odometer_m": self.odo.total_mm // 1000,
            "accel": 1 if self.accel is not None else 0,
            "accel_ok": 1 if self.accel is not None and self._accel_down_ms < 0 else 0,
            "i2c_errors": self.faults["i2c_errors"],
            "calib": self.motion.calib_state if self.motion else "none",
            "calib_quality": self.motion.calib_quality if self.motion else 0,
            "quick_resets": self.quick_resets,
            "store_used": st.get("used_bytes", 0), "store_blocks": st.get("blocks", 0),
            "next_seq": st.get("next_seq", 0), "trip": 1 if self.trip.state else 0,
        }
        if self.accel is not None and self.accel.count > 0:
            xyz = self.accel.xyz_mg  # last sample of the last FIFO read, box axes
            i = (self.accel.count - 1) * 3
            out["accel_mg"] = "%d,%d,%d" % (xyz[i], xyz[i + 1], xyz[i + 2])
        if self.link is not None:
            ls = self.link.stats()
            out["link"] = ls.get("state", "?")
            out["link_acked_blocks"] = ls.get("acked", 0)
        return out

    def on_config_change(self, key, old, new):
        """Audit: every configuration change leaves a `config` record (the PIN never in clear)."""
        if key == "installer_pin":
            old, new = "***", "***"
        self._emit({"type": "config", "t_ms": self.clock.ticks_ms(), "key": key, "old": str(old),
                    "new": str(new)})

    def summary(self):
        """What the box produced (ints and strings only, so both runtimes print the same JSON)."""
        trips = []
        for s in self.trip.trips:
            evs = []
            for e in s["events"]:   # (type, t_ms, dur_ms, peak_mg): firmware/trip.py on_event
                evs.append({"type": e[0], "t_ms": e[1], "dur_ms": e[2], "peak_mg": e[3]})
            t = dict(s)
            t["events"] = evs
            trips.append(t)
        m = self.motion
        return {
            "trips": trips,
            "odometer_mm": self.odo.total_mm,
            "records": {"count": self.records_count, "bytes": self.records_bytes, "pos": self.pos_count,
                        "blocks": self.blocks},
            "gnss": dict(self.parser.counters),
            "odometer": dict(self.odo.counters),
            "motion": {"calib_state": m.calib_state if m else "none",
                       "calib_quality": m.calib_quality if m else 0,
                       "R_q14": m.state()["R"] if m else None,
                       # the last commit of the mount calibration: box ms, 1-sigma x100, lag, rotation
                       "calib_commit": None if not (m and m.calib_commit) else {
                           "t_ms": m.calib_commit[0], "sigma_cdeg": int(m.calib_commit[1] * 100),
                           "lag_ms": m.calib_commit[2], "R_q14": m.calib_commit[3]},
                       "accel_overruns": self.accel.overruns if self.accel else 0},
            "tamper": list(self.tampers),
            "events": list(self.loose_events),
            "faults": dict(self.faults or {}),
            "store": self.store.stats(),
            "boot": self.boot,
            "power": self.pmio.core.summary(self.clock.ticks_ms()) if self.pmio is not None else None,
        }
