"""paydbox config: configure, self-test and provision boxes through their installer console.

    paydbox config PORT status|get [KEY]|set KEY VALUE [KEY VALUE ...]|selftest|calibrate|reboot
    paydbox config PORT export [-o FILE]        every setting as JSON (no PIN)
    paydbox config PORT import FILE             set every key of a JSON export that differs
    paydbox config provision --csv FILE         batch: one box per row, summary table at the end
    paydbox config PORT pin                     set or change the installer PIN (asked, never an argument)

The installer PIN never goes on the command line (other users see it in `ps`, shells keep it in
their history): it comes from $PAYDBOX_PIN, from --pin-file FILE (first line) or from a prompt
(no echo). A new PIN likewise: $PAYDBOX_NEW_PIN, --new-pin-file FILE or a prompt (asked twice).
A box with no PIN yet takes the PIN given for the login as its first one (first provisioning).

PORT is anything pyserial's serial_for_url opens (/dev/ttyUSB0, a virtual box pty, socket://...).
The tool speaks the console's machine mode: it sends "!command" lines and reads one JSON line back.
Values are validated on the host with the firmware's own schema (firmware/schema.py) before the box
is touched; errors name the key and the allowed range.
"""
import csv
import json
import os
import sys
import time

from firmware.config import ConfigError
from firmware.schema import KEYS, SCHEMA, parse_value

ACTIONS = ("status", "get", "set", "selftest", "calibrate", "reboot", "export", "import", "keys", "pin")
PIN_ON_COMMAND_LINE = ("the PIN never goes on the command line (visible in ps and shell history): "
                       "use PAYDBOX_PIN, --pin-file FILE or the prompt")
CSV_ID_COLS = ("port", "serial")


class ConfigCLIError(Exception):
    """One-line user-facing error."""


class ConsoleClient:
    """Machine-mode client of the box console."""

    def __init__(self, port, baudrate=115200, timeout=5.0):
        import serial

        self.port = port
        self.timeout = timeout
        if "://" not in port and not os.path.exists(port):
            raise ConfigCLIError("no device at %s" % port)
        try:
            self.ser = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05, exclusive=True)
        except serial.SerialException as e:
            s = str(e)
            if "lock" in s.lower() or "busy" in s.lower():
                raise ConfigCLIError("port busy: %s is used by another program" % port)
            raise ConfigCLIError("cannot open %s: %s" % (port, s.splitlines()[0] if s else type(e).__name__))
        try:
            self.ser.reset_input_buffer()
        except Exception:  # noqa: BLE001 - some URL handlers do not support it
            pass
        self._rx = b""
        self.provisioned_pin = False  # login() gave an unprovisioned box its first PIN
        self.ser.write(b"\x03\n")  # drop any half-typed line on the box

    def close(self):
        try:
            self.ser.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def cmd(self, line, timeout=None, check=True):
        """Send one command; returns the reply dict. check: raise ConfigCLIError on ok=false."""
        self.ser.write(b"!" + line.encode() + b"\n")
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            d = self.ser.read(1)  # returns at the first byte (or the 50 ms read timeout)
            if d:
                d += self.ser.read(self.ser.in_waiting)
            if d:
                self._rx += d
            while b"\n" in self._rx:
                ln, self._rx = self._rx.split(b"\n", 1)
                ln = ln.strip()
                if not ln.startswith(b"{"):
                    continue  # prompt, echo or boot chatter
                try:
                    rep = json.loads(ln)
                except ValueError:
                    continue
                if check and not rep.get("ok"):
                    raise ConfigCLIError(rep.get("error", "box refused %r" % line.split()[0]))
                return rep
        raise ConfigCLIError("no answer from the box console on %s to %r (box off, wrong port or not paydbox "
                             "firmware?)"
                             % (self.port, line.split()[0] if line else line))

    def login(self, pin, provision=True):
        """Open an installer session. A box without a PIN takes this one as its first PIN
        (first provisioning) when provision is true."""
        if pin is None:
            raise ConfigCLIError("this needs the installer PIN: PAYDBOX_PIN, --pin-file FILE or the prompt")
        if "\n" in pin or "\r" in pin:
            raise ConfigCLIError("installer PIN: one line of 4-8 digits")
        if provision and self.cmd("status").get("pin") == "unset":
            self.cmd("set installer_pin %s" % pin)
            self.provisioned_pin = True
            return
        self.cmd("login %s" % pin)

    def set_many(self, pairs, pin):
        """pairs: [(key, value_str)] validated on the host first; returns [(key, old, new)]."""
        for k, v in pairs:
            validate(k, v)
        self.login(pin)
        out = []
        for k, v in pairs:
            rep = self.cmd("set %s %s" % (k, v))
            out.append((k, rep["old"], rep["new"]))
        return out


def maintenance_unlock(port, baudrate=115200, pin=None, timeout=0.7):
    """Before `paydbox flash`: a box running the paydbox console with a PIN set has the REPL escape
    off, so flashing needs a logged-in `maintenance` first. Returns "unlocked", "unprovisioned" (no
    PIN: nothing to unlock) or "no console" (plain REPL or other firmware). pin: str or callable."""
    try:
        c = ConsoleClient(port, baudrate, timeout=timeout)
    except ConfigCLIError:
        return "no console"  # flash's own connect reports the port problem
    with c:
        try:
            st = c.cmd("status")
        except ConfigCLIError:
            return "no console"
        if st.get("pin") != "set" or st.get("maintenance"):
            return "unprovisioned" if st.get("pin") != "set" else "unlocked"
        if callable(pin):
            pin = pin()
        if not pin:
            raise ConfigCLIError("%s is provisioned (installer PIN set): paydbox flash needs the PIN "
                                 "(PAYDBOX_PIN, --pin-file FILE or the prompt)" % port)
        c.timeout = 5.0
        c.login(pin, provision=False)
        c.cmd("maintenance")
    return "unlocked"


def validate(key, value):
    if key == "installer_pin":
        raise ConfigCLIError("installer_pin: use `paydbox config PORT pin`: " + PIN_ON_COMMAND_LINE)
    try:
        parse_value(key, value)
    except ConfigError as e:
        raise ConfigCLIError(str(e))
    if "\n" in str(value) or "\r" in str(value):
        raise ConfigCLIError("%s: value must be one line" % key)


def _print_kv(d, indent=""):
    for k in sorted(d):
        if k == "ok":
            continue
        v = d[k]
        if isinstance(v, dict):
            print("%s%s:" % (indent, k))
            _print_kv(v, indent + "  ")
        else:
            print("%s%-20s %s" % (indent, k, v))


def do_action(client, action, rest, pin, out=None):
    """Run one action; returns the JSON-able result."""
    if action == "status":
        return client.cmd("status")
    if action == "keys":
        return client.cmd("keys")
    if action == "get":
        if rest:
            if rest[0] not in SCHEMA:
                raise ConfigCLIError("unknown key %r, known: %s" % (rest[0], " ".join(KEYS)))
            return client.cmd("get %s" % rest[0])
        return client.cmd("get")
    if action == "set":
        if not rest or len(rest) % 2:
            raise ConfigCLIError("usage: paydbox config PORT set KEY VALUE [KEY VALUE ...]")
        pairs = [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]
        ch = client.set_many(pairs, pin)
        return {"ok": True, "changes": [{"key": k, "old": o, "new": n} for k, o, n in ch]}
    if action == "selftest":
        return client.cmd("selftest", timeout=15)
    if action in ("calibrate", "reboot"):
        client.login(pin)
        return client.cmd(action)
    if action == "pin":
        new = new_pin_source()
        try:
            parse_value("installer_pin", new)
        except ConfigError as e:
            raise ConfigCLIError(str(e))
        if client.cmd("status").get("pin") == "unset":
            client.cmd("set installer_pin %s" % new)  # first provisioning
            return {"ok": True, "pin": "set", "first": True}
        client.login(pin, provision=False)
        client.cmd("set installer_pin %s" % new)
        return {"ok": True, "pin": "changed", "first": False}
    if action == "export":
        vals = client.cmd("get")["values"]
        vals.pop("installer_pin", None)
        doc = {"paydbox_config": 1, "values": vals}
        if out:
            with open(out, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
        return doc
    if action == "import":
        if not rest:
            raise ConfigCLIError("usage: paydbox config PORT import FILE")
        try:
            with open(rest[0]) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigCLIError("cannot read %s: %s" % (rest[0], e))
        vals = doc.get("values", doc) if isinstance(doc, dict) else None
        if not isinstance(vals, dict):
            raise ConfigCLIError("%s: expected a JSON object of key -> value" % rest[0])
        vals = {k: str(v) for k, v in vals.items() if k != "installer_pin"}
        for k, v in sorted(vals.items()):
            validate(k, v)
        cur = client.cmd("get")["values"]
        pairs = [(k, v) for k, v in sorted(vals.items()) if cur.get(k) != str(parse_value_str(k, v))]
        ch = client.set_many(pairs, pin) if pairs else []
        return {"ok": True, "changes": [{"key": k, "old": o, "new": n} for k, o, n in ch],
                "unchanged": len(vals) - len(pairs)}
    raise ConfigCLIError("unknown action %r, allowed %s" % (action, "|".join(ACTIONS)))


def parse_value_str(key, v):
    from firmware.schema import format_value

    return format_value(key, parse_value(key, v))


# ---- batch provisioning ----
def read_csv(path):
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigCLIError("cannot read %s: %s" % (path, e.strerror))
    if not rows:
        raise ConfigCLIError("%s: no rows" % path)
    cols = [c.strip() for c in rows[0].keys()]
    if not any(c in cols for c in CSV_ID_COLS):
        raise ConfigCLIError("%s: needs a 'port' or 'serial' column" % path)
    for c in cols:
        if c not in CSV_ID_COLS and c not in SCHEMA:
            raise ConfigCLIError("%s: unknown column %r (config keys: %s)" % (path, c, " ".join(KEYS)))
    out = []
    for i, r in enumerate(rows, start=2):
        r = {k.strip(): (v or "").strip() for k, v in r.items() if k}
        for k, v in r.items():
            if k in SCHEMA and v != "":
                try:
                    parse_value(k, v)
                except ConfigError as e:
                    raise ConfigCLIError("%s line %d: %s" % (path, i, e))
        out.append((i, r))
    return out


def port_for_serial(sn):
    import serial.tools.list_ports

    for p in serial.tools.list_ports.comports():
        if p.serial_number and p.serial_number == sn:
            return p.device
    raise ConfigCLIError("no connected box with USB serial number %s" % sn)


def provision_one(row, pin, baudrate=115200):
    t0 = time.monotonic()
    res = {"port": row.get("port", ""), "serial": row.get("serial", ""),
           "device_id": row.get("device_id", ""),
           "vin": row.get("vin", ""), "result": "FAIL", "selftest": "-", "error": ""}
    try:
        port = row.get("port") or port_for_serial(row["serial"])
        res["port"] = port
        pairs = [(k, row[k]) for k in KEYS if k in row and row[k] != ""]
        with ConsoleClient(port, baudrate) as c:
            ch = c.set_many(pairs, pin)
            st = c.cmd("selftest", timeout=15)
            stat = c.cmd("status")
        res["changes"] = len([1 for _, o, n in ch if o != n])
        res["selftest"] = "pass" if st.get("pass") else "FAIL: " + ", ".join(
            k for k, v in sorted(st.get("checks", {}).items()) if not str(v).startswith("ok"))
        res["fw"] = stat.get("fw", "?")
        res["result"] = "ok" if st.get("pass") else "selftest"
    except ConfigCLIError as e:
        res["error"] = str(e)
    res["seconds"] = round(time.monotonic() - t0, 2)
    return res


def provision(csv_path, pin, baudrate=115200, stream=None):
    rows = read_csv(csv_path)
    results = []
    for _, r in rows:
        res = provision_one(r, pin, baudrate)
        results.append(res)
        if stream:
            stream.write("%-20s %-16s %s\n"
                         % (res["port"], res["device_id"],
                            res["result"] + (": " + res["error"] if res["error"] else "")))
            stream.flush()
    return results


def summary_table(results):
    cols = ("port", "device_id", "vin", "result", "selftest", "seconds")
    rows = [[str(r.get(c, "")) for c in cols] for r in results]
    w = [max(len(c), *(len(x[i]) for x in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(cols))]
    lines.append("  ".join("-" * x for x in w))
    for x in rows:
        lines.append("  ".join(v.ljust(w[i]) for i, v in enumerate(x)))
    ok = sum(1 for r in results if r["result"] == "ok")
    lines.append("%d of %d boxes provisioned" % (ok, len(results)))
    for r in results:
        if r["error"]:
            lines.append("%s: %s" % (r["port"] or r["serial"], r["error"]))
    return "\n".join(lines)


def _read_pin_file(path, what):
    try:
        with open(path) as f:
            line = f.readline().strip()
    except OSError as e:
        raise ConfigCLIError("cannot read %s %s: %s" % (what, path, e.strerror))
    if not line:
        raise ConfigCLIError("%s %s is empty" % (what, path))
    return line


def _prompt(text):
    import getpass

    if not sys.stdin.isatty():
        return None
    return getpass.getpass(text)


def pin_source(args):
    """The installer PIN: --pin-file, $PAYDBOX_PIN, or a prompt (no echo) on a terminal; None if none."""
    if getattr(args, "pin_file", None):
        return _read_pin_file(args.pin_file, "PIN file")
    if os.environ.get("PAYDBOX_PIN"):
        return os.environ["PAYDBOX_PIN"]
    return _prompt("installer PIN: ")


_NEW_PIN_FILE = [None]


def new_pin_source():
    if _NEW_PIN_FILE[0]:
        return _read_pin_file(_NEW_PIN_FILE[0], "new-PIN file")
    if os.environ.get("PAYDBOX_NEW_PIN"):
        return os.environ["PAYDBOX_NEW_PIN"]
    a = _prompt("new installer PIN: ")
    if a is None:
        raise ConfigCLIError(
            "the new PIN: PAYDBOX_NEW_PIN, --new-pin-file FILE or the prompt (needs a terminal)")
    if _prompt("new installer PIN again: ") != a:
        raise ConfigCLIError("the two new PINs differ")
    return a


def add_arguments(p):
    p.add_argument("port", help="serial port / pyserial URL of the box, or 'provision'")
    p.add_argument("action", nargs="?", help="|".join(ACTIONS))
    p.add_argument("rest", nargs="*", help="KEY [VALUE ...] or FILE")
    p.add_argument("--pin", dest="pin_argv", help=argparse_suppress())
    p.add_argument("--pin-file", metavar="FILE",
                   help="read the installer PIN from FILE (else $PAYDBOX_PIN, else a prompt)")
    p.add_argument("--new-pin-file", metavar="FILE",
                   help="pin: read the new PIN from FILE (else $PAYDBOX_NEW_PIN, else a prompt)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("-o", "--output", help="export: write to this file")
    p.add_argument("--csv", help="provision: CSV with port or serial, device_id, fleet_id, vin, plate, ...")


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


NEEDS_PIN = ("set", "calibrate", "reboot", "import", "pin")


def run(args):
    if args.pin_argv is not None:
        raise ConfigCLIError("--pin: " + PIN_ON_COMMAND_LINE)
    _NEW_PIN_FILE[0] = args.new_pin_file
    args.pin = pin_source(args) if (args.port == "provision" or args.action in NEEDS_PIN) else None
    if args.port == "provision":
        if not args.csv:
            raise ConfigCLIError("provision needs --csv FILE")
        t0 = time.monotonic()
        results = provision(args.csv, args.pin, args.baud, stream=None if args.json else sys.stderr)
        if args.json:
            print(json.dumps({"results": results, "seconds": round(time.monotonic() - t0, 2)},
                             sort_keys=True))
        else:
            print(summary_table(results))
        return 0 if all(r["result"] == "ok" for r in results) else 1
    if not args.action:
        raise ConfigCLIError("missing action: paydbox config PORT %s" % "|".join(ACTIONS))
    with ConsoleClient(args.port, args.baud) as c:
        res = do_action(c, args.action, args.rest, args.pin, args.output)
        if c.provisioned_pin:
            sys.stderr.write("note: %s had no installer PIN; the PIN given is now its PIN (first "
                             "provisioning)\n" % args.port)
    if args.json:
        print(json.dumps(res, sort_keys=True))
    elif args.action == "pin":
        print("installer PIN %s" % ("set (first provisioning)" if res["first"] else "changed"))
    elif args.action == "set" or args.action == "import":
        for ch in res["changes"]:
            print("%s: %s -> %s" % (ch["key"], ch["old"], ch["new"]))
        if not res["changes"]:
            print("nothing to change")
    elif args.action == "get" and args.rest:
        print(res["value"])
    elif args.action == "get" or args.action == "export" and not args.output:
        _print_kv(res.get("values", {}))
    elif args.action == "selftest":
        _print_kv(res.get("checks", {}))
        print("selftest: %s" % ("PASS" if res.get("pass") else "FAIL"))
        return 0 if res.get("pass") else 1
    elif args.action == "export":
        print("wrote %s" % args.output)
    else:
        _print_kv(res)
    return 0
