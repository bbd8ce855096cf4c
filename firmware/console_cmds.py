# The installer console's commands (firmware/console.py reads the lines): loaded for each command
# line and unloaded after its reply (a box in a drive sees no console session: ~4 KB of heap and
# ~60 names it never needs). Functions of the Console `c`. Runs on MicroPython and CPython.
import json

from firmware.config import ConfigError, with_schema
from firmware.console import FREE_TRIES, MAX_LINE, SESSION_MS

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(installer_pin=0, keys_allowed=0, maintenance=0)

HELP = (
    "status                 box health: GNSS, accelerometer, storage, odometer",
    "get [key]              show one or every setting",
    "set KEY VALUE          change a setting (login first)",
    "login PIN / logout     installer session",
    "selftest               check GNSS, accelerometer, storage, config",
    "calibrate              start mounting calibration (login first)",
    "reboot                 restart the box (login first)",
    "maintenance            allow the REPL escape until reboot, for paydbox flash (login first)",
    "json on|off            one JSON line per reply (or start a line with !)",
    "echo on|off            echo typed characters",
    "keys                   every key with its allowed values",
)


# -- a line from the console's UART, and its reply --------------------------------------------
def line(c, raw, overflow):
    machine = raw.startswith(b"!")
    if overflow:
        rep = {"ok": False, "error": "line too long (max %d)" % MAX_LINE}
    else:
        try:
            text_line = raw.decode()
        except UnicodeError:
            text_line = None
        if text_line is None:
            rep = {"ok": False, "error": "line is not UTF-8"}
        else:
            rep = execute(c, text_line[1:] if machine else text_line)
    c.lines += 1
    if machine or c.json_mode:
        c.uart.write(json.dumps(rep).encode() + b"\n")
    else:
        c.uart.write(text(rep).encode() + b"\r\n> ")


def console_line(c, line):
    machine = line.startswith("!")
    rep = execute(c, line[1:] if machine else line)
    if machine or c.json_mode:
        return json.dumps(rep)
    return text(rep)


# -- text rendering for people --------------------------------------------------------------
def text(rep):
    if not rep.get("ok"):
        return "error: " + rep.get("error", "?")
    if "text" in rep:
        return rep["text"]
    out = []
    for k in sorted(rep):
        if k == "ok":
            continue
        v = rep[k]
        if isinstance(v, dict):
            for k2 in sorted(v):
                out.append("%s.%s: %s" % (k, k2, v[k2]))
        else:
            out.append("%s: %s" % (k, v))
    return "\r\n".join(out) if out else "ok"


# -- commands ---------------------------------------------------------------------------------
def execute(c, line):
    """One command line -> reply dict (always has 'ok')."""
    parts = line.strip().split(None, 2)
    if not parts:
        return {"ok": True, "text": ""}
    cmd = parts[0].lower()
    if c._session_until >= 0:
        if c._now() > c._session_until:
            c._session_until = -1
        else:
            c._session_until = c._now() + SESSION_MS
    try:
        fn = globals().get("_cmd_" + cmd)
        if fn is None:
            return {"ok": False, "error": "unknown command %r, try help" % cmd}
        return fn(c, parts[1:])
    except ConfigError as e:
        return {"ok": False, "error": str(e)}
    except OSError as e:
        return {"ok": False, "error": "%s failed: OSError %s" % (cmd, e)}


def _need_login(c, what):
    if not c.logged_in():
        return {"ok": False, "error": "%s needs the installer PIN: login PIN" % what}
    return None


def _cmd_help(c, args):
    return {"ok": True, "text": "\r\n".join(HELP), "commands": [h.split()[0] for h in HELP]}


def _cmd_keys(c, args):
    return {"ok": True, "keys": with_schema("keys_allowed")}


def _cmd_status(c, args):
    st = {}
    if c.status_provider is not None:
        st = c.status_provider() or {}
    rep = {"ok": True, "fw": c.version, "device_id": c.config.get("device_id"),
           "config": c.config.source, "pin": "set" if c.config.pin_set() else "unset",
           "maintenance": 1 if c.maintenance else 0}
    for k in st:
        rep[k] = st[k]
    return rep


def _cmd_get(c, args):
    if args:
        key = args[0]
        return {"ok": True, "key": key, "value": c.config.get_str(key)}
    vals = c.config.export()
    vals["installer_pin"] = c.config.get_str("installer_pin")
    return {"ok": True, "values": vals}


def _cmd_set(c, args):
    if len(args) < 2:
        return {"ok": False, "error": "usage: set KEY VALUE"}
    key = args[0]
    c.config.get(key)  # ConfigError for an unknown key, before the login check
    first = key == "installer_pin" and not c.config.pin_set()
    if not first:  # first provisioning: the first PIN needs no login, every other change does
        rep = _need_login(c, "set")
        if rep:
            return rep
    old, new = c.config.set(key, args[1])
    if key == "installer_pin":
        _save_bad_pins(c, 0)
        c._session_until = c._now() + SESSION_MS
        c.apply_repl_guard()
    return {"ok": True, "key": key, "old": old, "new": new}


def _cmd_login(c, args):
    now = c._now()
    if c._locked_until >= 0 and now < c._locked_until:
        wait_s = (c._locked_until - now + 999) // 1000
        return {"ok": False, "error": "locked after wrong PINs, retry in %d s" % wait_s}
    if not args:
        return {"ok": False, "error": "usage: login PIN"}
    if not c.config.pin_set():
        return {"ok": False,
                "error": "no installer PIN set yet: first provisioning is `set installer_pin NEW`"}
    bad = c._bad_pins + 1
    _save_bad_pins(c, bad)  # counted before the check: cutting power mid-check is no free try
    if c.config.check_pin(args[0]):
        _save_bad_pins(c, 0)
        c._locked_until = -1
        c._session_until = now + SESSION_MS
        if c.config.pin_is_legacy():
            c.config.set("installer_pin", args[0])  # re-hash an old firmware's PIN with PBKDF2
        return {"ok": True, "text": "logged in", "session_s": SESSION_MS // 1000}
    c._session_until = -1
    if bad >= FREE_TRIES:
        lock = c._lock_ms(bad)
        c._locked_until = now + lock
        return {"ok": False, "error": "wrong PIN, locked for %d s" % (lock // 1000)}
    return {"ok": False, "error": "wrong PIN (%d tries left before lockout)" % (FREE_TRIES - bad)}


def _cmd_maintenance(c, args):
    rep = _need_login(c, "maintenance")
    if rep:
        return rep
    c.maintenance = True
    c.apply_repl_guard()
    return {"ok": True, "text": "maintenance: REPL escape allowed until reboot", "maintenance": 1}


def _cmd_logout(c, args):
    c._session_until = -1
    return {"ok": True, "text": "logged out"}


def _cmd_json(c, args):
    c.json_mode = bool(args) and args[0].lower() == "on"
    return {"ok": True, "json": 1 if c.json_mode else 0}


def _cmd_echo(c, args):
    c.echo = bool(args) and args[0].lower() == "on"
    return {"ok": True, "echo": 1 if c.echo else 0}


def _cmd_selftest(c, args):
    fn = c.hooks.get("selftest")
    checks = fn() if fn is not None else default_selftest(c)
    ok = True
    for k in checks:
        if not checks[k].startswith("ok"):
            ok = False
    return {"ok": True, "pass": 1 if ok else 0, "checks": checks}


def default_selftest(c):
    """Checks from the status provider: GNSS seen, accelerometer present, storage, config."""
    st = c.status_provider() if c.status_provider is not None else {}
    checks = {}
    if st.get("gnss_bytes", 0) > 0 or st.get("sats", -1) >= 0:
        checks["gnss"] = "ok: %s sats, fix %s" % (st.get("sats", -1), st.get("gnss_fix", 0))
    else:
        checks["gnss"] = "FAIL: no data from the GNSS receiver"
    if st.get("accel_ok", 0):
        checks["accel"] = "ok: %s mg" % (st.get("accel_mg", "?"),)
    else:
        checks["accel"] = "FAIL: accelerometer not detected"
    if st.get("store_ok", 1):
        checks["storage"] = "ok: %s bytes used" % (st.get("store_used", 0),)
    else:
        checks["storage"] = "FAIL: store not writable"
    src = c.config.source
    checks["config"] = ("ok: " if src != "defaults" else "FAIL: ") + "config from " + src
    return checks


def _cmd_calibrate(c, args):
    rep = _need_login(c, "calibrate")
    if rep:
        return rep
    fn = c.hooks.get("calibrate")
    if fn is None:
        return {"ok": False, "error": "calibrate not supported by this firmware"}
    r = fn()
    out = {"ok": True}
    if isinstance(r, dict):
        for k in r:
            out[k] = r[k]
    else:
        out["text"] = str(r)
    return out


def _cmd_reboot(c, args):
    rep = _need_login(c, "reboot")
    if rep:
        return rep
    fn = c.hooks.get("reboot")
    if fn is None:
        return {"ok": False, "error": "reboot not supported by this firmware"}
    c._after = fn
    return {"ok": True, "text": "rebooting"}


def _save_bad_pins(c, n):
    c._bad_pins = n
    if c.lock_path is None:
        return
    import os

    tmp = c.lock_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"bad": n}))
    os.rename(tmp, c.lock_path)
