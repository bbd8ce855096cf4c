# The config schema (the one table of installer settings with their defaults and allowed values),
# validation, formatting and the config file (storage format: firmware/config.py). The box needs
# them only while settings are read from flash (boot) or changed (console `set`): firmware/config.py
# loads this module for that and unloads it after (12 KB of heap on the 64-bit VM, the biggest box
# module; the Config keeps only the values). Host tools import it as they like (it then stays).
# Runs unchanged on MicroPython and CPython.
import json
import os

from firmware.config import ConfigError
from hw.compat import path_exists

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(ABCDEFGHJKLMNPRSTUVWXYZ0123456789=0, accel_range_g=0, accel_rate_hz=0, calib_lag_max_ms=0,
         cutoff_hyst_mv=0, gnss_rate_hz=0, harsh_accel_mps2=0, harsh_brake_mps2=0, harsh_corner_mps2=0,
         heartbeat_h=0, installer_pin=0, overspeed_kmh=0, park_hold_s=0, pos_course_step_cdeg=0,
         pos_speed_step_mmps=0, pos_tolerance_m=0, status_interval_s=0, store_max_kb=0, unprovisioned=0)

try:
    import binascii

    _crc32 = binascii.crc32
except (ImportError, AttributeError):  # pragma: no cover - every supported runtime has it
    _crc32 = None

try:
    import hashlib
except ImportError:  # pragma: no cover
    import uhashlib as hashlib

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # ISO 3779: no I, O, Q
_PLATE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -"
# No default PIN: a new box has none ("" = unset) and takes its first one with `set installer_pin`
# (first provisioning, docs/security.md); until then nothing needs a login because nothing can log in.

# key -> (type, default, allowed), each under a comment saying what it is (the descriptions are not
# loaded on the box: 24 strings of RAM that nothing read)
#   type 'int': allowed = (lo, hi) or a tuple of choices (first element a list marks choices)
#   type 'dec': decimal number stored as a float with 2 decimals; allowed = (lo, hi)
#   type 'str': allowed = (min_len, max_len, charset)
#   type 'choice': allowed = tuple of strings
#   type 'vin': '' or 17 chars of the VIN charset
#   type 'pin': 4..8 digits, stored as PBKDF2-HMAC-SHA256 with a per-box salt (firmware/pin.py);
#     '' = no PIN yet
SCHEMA = {
    # box identity, unique in the fleet (MQTT topic)
    "device_id": ("str", "unprovisioned", (1, 32, _ID_CHARS)),
    # fleet / customer the box belongs to
    "fleet_id": ("str", "", (0, 32, _ID_CHARS)),
    # vehicle identification number: 17 chars, no I/O/Q (or empty)
    "vin": ("vin", "", None),
    # registration plate: A-Z 0-9 space hyphen
    "plate": ("str", "", (0, 12, _PLATE_CHARS)),
    # harsh acceleration threshold, m/s2
    "harsh_accel_mps2": ("dec", 2.5, (1.0, 10.0)),
    # harsh braking threshold, m/s2
    "harsh_brake_mps2": ("dec", 2.7, (1.0, 10.0)),
    # harsh cornering (lateral) threshold, m/s2
    "harsh_corner_mps2": ("dec", 3.4, (1.0, 10.0)),
    # crash detection threshold, g
    "crash_g": ("dec", 3.0, (1.5, 16.0)),
    # largest GNSS-to-accelerometer lag the mount calibration searches, ms
    "calib_lag_max_ms": ("int", 2500, (0, 3000)),
    # over-speed threshold, km/h
    "overspeed_kmh": ("int", 130, (30, 250)),
    # accelerometer output data rate, Hz
    "accel_rate_hz": ("int", 100, [50, 100, 200, 400]),
    # accelerometer full scale, g
    "accel_range_g": ("int", 16, [8, 16]),
    # GNSS navigation rate, Hz
    "gnss_rate_hz": ("int", 1, [1, 5, 10]),
    # GNSS UART baud rate
    "gnss_baud": ("int", 9600, [4800, 9600, 38400, 57600, 115200]),
    # ignition off / still this long ends a trip, s
    "trip_end_s": ("int", 180, (30, 3600)),
    # engine idling this long is an idle event, s
    "idle_s": ("int", 300, (60, 3600)),
    # position privacy mode
    "privacy": ("choice", "off", ("off", "no_positions", "rounded")),
    # bounded-error mode: drop positions a straight line predicts within N m (0: lossless)
    "pos_tolerance_m": ("int", 0, (0, 50)),
    # speed step of position records, mm/s (1: lossless; 100 = 0.1 m/s)
    "pos_speed_step_mmps": ("int", 1, [1, 10, 100, 250]),
    # course step of position records, 0.01 deg (1: lossless; 100 = 1 deg)
    "pos_course_step_cdeg": ("int", 1, [1, 10, 100]),
    # edge agent link UART baud rate
    "link_baud": ("int", 115200, [9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600]),
    # status record period, s
    "status_interval_s": ("int", 3600, (60, 86400)),
    # record store size limit, KiB
    "store_max_kb": ("int", 1024, (64, 8192)),
    # parked: the edge agent is woken this often to forward records, h
    "heartbeat_h": ("int", 24, (1, 168)),
    # cut-off threshold: supply below it (ignition off) for cutoff_s switches box and agent off, mV
    "cutoff_mv": ("int", 11800, (10500, 12600)),
    # cut-off delay: the supply below cutoff_mv this long (crank dips never count), s
    "cutoff_s": ("int", 300, (10, 3600)),
    # cut-off ends when the supply is back to cutoff_mv + this, mV
    "cutoff_hyst_mv": ("int", 400, (100, 2000)),
    # parked: the agent stays on this long after the backlog is sent, s
    "park_hold_s": ("int", 60, (0, 3600)),
    # parked: accelerometer activity above this wakes the box (GNSS confirms movement), mg
    "wake_mg": ("int", 250, (50, 2000)),
    # parked: leaving this radius with the ignition off raises an alarm, m
    "geofence_m": ("int", 300, (50, 10000)),
    # installer PIN for set/calibrate/reboot/maintenance: 4-8 digits (stored as PBKDF2)
    "installer_pin": ("pin", "", None),
}

KEYS = sorted(SCHEMA)


def fmt_dec(v):
    """Deterministic 2-decimal formatting (identical under MicroPython and CPython)."""
    c = int(round(v * 100))
    s = "-" if c < 0 else ""
    c = abs(c)
    return "%s%d.%02d" % (s, c // 100, c % 100)


def allowed_text(key):
    """Human description of the allowed values of key, e.g. '50|100|200|400' or '1.00..10.00'."""
    typ, _, allowed = SCHEMA[key]
    if typ == "int":
        if isinstance(allowed, list):
            return "|".join(str(a) for a in allowed)
        return "%d..%d" % allowed
    if typ == "dec":
        return "%s..%s" % (fmt_dec(allowed[0]), fmt_dec(allowed[1]))
    if typ == "choice":
        return "|".join(allowed)
    if typ == "vin":
        return "17 chars A-Z 0-9 without I O Q, or empty"
    if typ == "pin":
        return "4..8 digits"
    lo, hi, chars = allowed
    cs = "A-Z a-z 0-9 - _ ." if chars == _ID_CHARS else "A-Z 0-9 space -"
    return "%d..%d chars of %s" % (lo, hi, cs)


def _bad(key, value_str):
    return ConfigError("%s: bad value %r, allowed %s" % (key, value_str, allowed_text(key)))


def _legacy_pin_hash(pin, salt):
    # firmware before PBKDF2 stored "sha256:<salt>:<hash>"; still checked (and re-hashed at the next
    # good login) so an updated box keeps its PIN instead of falling back to "no PIN"
    h = hashlib.sha256(("paydbox-pin:" + salt + ":" + pin).encode())
    return "sha256:%s:%s" % (salt, "".join("%02x" % b for b in h.digest()))


def parse_value(key, value_str):
    """value_str -> stored value for key; ConfigError naming the key and the allowed range."""
    if key not in SCHEMA:
        raise ConfigError("unknown key %r, known: %s" % (key, " ".join(KEYS)))
    typ, _, allowed = SCHEMA[key]
    s = str(value_str).strip()
    if typ == "int":
        try:
            v = int(s)
        except ValueError:
            raise _bad(key, value_str)
        if isinstance(allowed, list):
            if v not in allowed:
                raise _bad(key, value_str)
        elif not allowed[0] <= v <= allowed[1]:
            raise _bad(key, value_str)
        return v
    if typ == "dec":
        try:
            v = float(s)
        except ValueError:
            raise _bad(key, value_str)
        if not (v == v) or not allowed[0] <= v <= allowed[1]:  # v != v: NaN
            raise _bad(key, value_str)
        return int(round(v * 100)) / 100
    if typ == "choice":
        if s not in allowed:
            raise _bad(key, value_str)
        return s
    if typ == "vin":
        s = s.upper()
        if s == "":
            return s
        if len(s) != 17:
            raise _bad(key, value_str)
        for ch in s:
            if ch not in _VIN_CHARS:
                raise _bad(key, value_str)
        return s
    if typ == "pin":
        if not 4 <= len(s) <= 8:
            raise _bad(key, "****")
        for ch in s:
            if ch not in "0123456789":
                raise _bad(key, "****")
        from firmware import pin as _pin

        return _pin.hash_pin(s)
    lo, hi, chars = allowed
    if chars == _PLATE_CHARS:
        s = s.upper()
    if not lo <= len(s) <= hi:
        raise _bad(key, value_str)
    for ch in s:
        if ch not in chars:
            raise _bad(key, value_str)
    return s


def format_value(key, v):
    typ = SCHEMA[key][0]
    if typ == "dec":
        return fmt_dec(v)
    if typ == "pin":
        return "unset" if v == "" else "set"
    return str(v)


def defaults():
    d = {}
    for k in SCHEMA:
        d[k] = SCHEMA[k][1]
    return d


def _encode(values):
    line = json.dumps(values).encode()
    return line + b"\n" + (b"%08x\n" % (_crc32(line) & 0xFFFFFFFF))


def _decode(data):
    """bytes of a config file -> dict, or None when partial/corrupt (bad CRC, bad JSON)."""
    parts = data.split(b"\n")
    if len(parts) < 2 or len(parts[1]) != 8:
        return None
    try:
        crc = int(parts[1], 16)
    except ValueError:
        return None
    if _crc32(parts[0]) & 0xFFFFFFFF != crc:
        return None
    try:
        v = json.loads(parts[0])
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def keys_allowed():
    """{key: allowed_text(key)} of every setting (console `keys`)."""
    d = {}
    for k in KEYS:
        d[k] = allowed_text(k)
    return d


# ---- the Config's work (firmware/config.py delegates here; c is the Config) ----
def init(c, values):
    c._v = defaults()
    if values:
        for k in values:
            _put_loaded(c, k, values[k])


def _put_loaded(c, k, v):
    if k not in SCHEMA:
        c.dropped.append(k)
        return
    typ = SCHEMA[k][0]
    if typ == "pin":
        if isinstance(v, str) and (v == "" or v.startswith("sha256:") or v.startswith("pbkdf2-sha256$")):
            c._v[k] = v
        else:
            c.dropped.append(k)
        return
    try:
        c._v[k] = parse_value(k, fmt_dec(v) if typ == "dec" and not isinstance(v, str) else v)
    except (ConfigError, TypeError, ValueError):
        c.dropped.append(k)


def load(cls, path, on_change):
    for src, p in (("main", path), ("tmp", path + ".tmp"), ("backup", path + ".bak")):
        data = _read(p)
        if data is None:
            continue
        vals = _decode(data)
        if vals is None:
            continue
        c = cls(path, vals, on_change)
        c.source = src
        return c
    return cls(path, None, on_change)


def save(c):
    if c.path is None:
        return
    tmp = c.path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_encode(c._v))
    if path_exists(c.path):
        bak = c.path + ".bak"
        try:
            os.rename(c.path, bak)
        except OSError:  # filesystems whose rename does not replace (FAT)
            try:
                os.remove(bak)
            except OSError:
                pass
            os.rename(c.path, bak)
    os.rename(tmp, c.path)
    c.source = "main"


def get_str(c, key):
    return format_value(key, c.get(key))


def set_value(c, key, value_str, do_save):
    new = parse_value(key, value_str)
    old_s = get_str(c, key)
    old = c._v[key]
    c._v[key] = new
    new_s = get_str(c, key)
    if do_save:
        try:
            save(c)
        except OSError:
            c._v[key] = old
            raise
    if c.on_change is not None and (old != new):
        c.on_change(key, old_s, new_s)
    return old_s, new_s


def check_pin(c, pin):
    h = c._v["installer_pin"]
    if h.startswith("sha256:"):
        parts = h.split(":")
        if len(parts) != 3:
            return False
        from firmware.pin import equal

        return equal(_legacy_pin_hash(str(pin), parts[1]).encode(), h.encode())
    from firmware import pin as _pin

    return _pin.check_pin(pin, h)


def export(c):
    d = {}
    for k in KEYS:
        if SCHEMA[k][0] != "pin":
            d[k] = get_str(c, k)
    return d
