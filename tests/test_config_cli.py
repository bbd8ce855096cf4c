"""paydbox config end to end against virtual boxes (firmware in the MicroPython VM behind a pty)."""
import json
import time

import pytest

from tools.cli import main
from tools.installer.config_cli import ConfigCLIError, ConsoleClient, read_csv
from tools.installer.virtual_box import VirtualBox
from tools.mpvm import micropython_binary

# no skip when the VM is missing: `make setup` installs it, and a missing install step must fail


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    from test_virtual_box import make_trace

    return make_trace(tmp_path_factory.mktemp("tr") / "drive.jsonl", 900)


@pytest.fixture
def box(tmp_path, trace):
    vb = VirtualBox(trace, tmp_path / "box", speed=20)
    info = vb.start()
    yield info
    vb.stop()


def cli(capsys, *argv, pin=None):
    """paydbox config ...; the PIN goes through $PAYDBOX_PIN, never argv."""
    import os

    old = os.environ.pop("PAYDBOX_PIN", None)
    if pin is not None:
        os.environ["PAYDBOX_PIN"] = pin
    try:
        rc = main(["config", *argv])
    finally:
        os.environ.pop("PAYDBOX_PIN", None)
        if old is not None:
            os.environ["PAYDBOX_PIN"] = old
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_status_get_set_selftest_cli(box, capsys):
    port = box["console"]
    rc, out, _ = cli(capsys, port, "status", "--json")
    st = json.loads(out)
    assert rc == 0 and st["ok"] and st["fw"] and st["device_id"] == "unprovisioned"
    assert "gnss_fix" in st and "accel_ok" in st
    assert st["pin"] == "unset"
    # set needs the PIN; never from argv
    rc, _, err = cli(capsys, port, "set", "vin", "WVWZZZ1JZXW000001")
    assert rc == 2 and "PIN" in err
    rc, _, err = cli(capsys, port, "set", "vin", "WVWZZZ1JZXW000001", "--pin", "0000")
    assert rc == 2 and "never goes on the command line" in err
    # first provisioning: the new box takes the PIN given as its first one
    rc, out, err = cli(capsys, port, "set", "vin", "wvwzzz1jzxw000001", "plate", "ab 123", pin="0000")
    assert rc == 0 and "vin:  -> WVWZZZ1JZXW000001" in out and "plate:  -> AB 123" in out
    assert "first provisioning" in err
    rc, _, err = cli(capsys, port, "set", "vin", "WVWZZZ1JZXW000001", pin="9999")
    assert rc == 2 and "wrong PIN" in err
    # bad values: one line naming the key and the allowed range (checked on the host, box untouched)
    rc, _, err = cli(capsys, port, "set", "accel_rate_hz", "75", pin="0000")
    assert rc == 2 and err.strip() == "paydbox: error: accel_rate_hz: bad value '75', allowed 50|100|200|400"
    rc, _, err = cli(capsys, port, "set", "overspeed_kmh", "400", pin="0000")
    assert "overspeed_kmh" in err and "30..250" in err
    rc, _, err = cli(capsys, port, "get", "colour")
    assert rc == 2 and "unknown key 'colour'" in err
    # the box refuses a bad value by itself too (a terminal user, no host validation)
    with ConsoleClient(port) as c:
        c.login("0000")
        with pytest.raises(ConfigCLIError, match=r"gnss_rate_hz: bad value '2', allowed 1\|5\|10"):
            c.cmd("set gnss_rate_hz 2")
    rc, out, _ = cli(capsys, port, "get", "vin")
    assert out.strip() == "WVWZZZ1JZXW000001"
    rc, out, _ = cli(capsys, port, "get", "--json")
    vals = json.loads(out)["values"]
    assert vals["plate"] == "AB 123" and vals["accel_rate_hz"] == "100" and vals["installer_pin"] == "set"
    rc, out, _ = cli(capsys, port, "selftest")
    assert "gnss" in out and "accel" in out and "storage" in out and "selftest:" in out
    rc, out, _ = cli(capsys, port, "selftest", "--json")
    r = json.loads(out)
    assert r["checks"]["config"].startswith("ok") and r["checks"]["accel"].startswith("ok")
    rc, out, _ = cli(capsys, port, "calibrate", "--json", pin="0000")
    assert rc == 0 and "calib" in json.loads(out)


def test_pin_change_and_export_import(box, tmp_path, capsys):
    port = box["console"]
    import os

    rc, _, err = cli(capsys, port, "set", "installer_pin", "482913", pin="0000")
    assert rc == 2 and "paydbox config PORT pin" in err  # a PIN as an argument: refused
    pin_file = tmp_path / "pin"
    pin_file.write_text("0000\n")
    os.environ["PAYDBOX_NEW_PIN"] = "482913"
    try:
        rc, out, _ = cli(capsys, port, "pin", "--pin-file", str(pin_file))  # first provisioning
        assert rc == 0 and "first provisioning" in out, out
        os.environ["PAYDBOX_NEW_PIN"] = "271828"
        rc, out, _ = cli(capsys, port, "pin", pin="482913")
        assert rc == 0 and "changed" in out, out
        os.environ["PAYDBOX_NEW_PIN"] = "12"
        rc, _, err = cli(capsys, port, "pin", pin="271828")
        assert rc == 2 and "installer_pin" in err and "12" not in err
    finally:
        del os.environ["PAYDBOX_NEW_PIN"]
    rc, _, err = cli(capsys, port, "set", "plate", "X1", pin="482913")
    assert rc == 2 and "wrong PIN" in err
    pin_file.write_text("271828\n")
    assert cli(capsys, port, "set", "crash_g", "3.3", "fleet_id", "acme", "--pin-file", str(pin_file))[0] == 0
    exp = tmp_path / "box.json"
    assert cli(capsys, port, "export", "-o", str(exp))[0] == 0
    doc = json.loads(exp.read_text())
    assert doc["values"]["crash_g"] == "3.30" and "installer_pin" not in doc["values"]
    rc, out, _ = cli(capsys, port, "import", str(exp), pin="271828")
    assert rc == 0 and "nothing to change" in out
    doc["values"]["crash_g"] = "4"
    doc["values"]["privacy"] = "rounded"
    exp.write_text(json.dumps(doc))
    rc, out, _ = cli(capsys, port, "import", str(exp), "--json", pin="271828")
    ch = {c["key"]: c["new"] for c in json.loads(out)["changes"]}
    assert ch == {"crash_g": "4.00", "privacy": "rounded"}
    doc["values"]["privacy"] = "sometimes"
    exp.write_text(json.dumps(doc))
    rc, _, err = cli(capsys, port, "import", str(exp), pin="271828")
    assert rc == 2 and "privacy" in err and "off|no_positions|rounded" in err


def test_provision_csv_two_boxes(tmp_path, trace, capsys):
    vbs = [VirtualBox(trace, tmp_path / ("box%d" % i), speed=20) for i in range(2)]
    try:
        infos = [vb.start() for vb in vbs]
        csvp = tmp_path / "fleet.csv"
        csvp.write_text("port,device_id,fleet_id,vin,plate\n"
                        "%s,acme-0001,acme,WVWZZZ1JZXW000001,B-AC 101\n"
                        "%s,acme-0002,acme,WVWZZZ1JZXW000002,B-AC 102\n"
                        "%s,acme-0003,acme,WVWZZZ1JZXW000003,B-AC 103\n"
                        % (infos[0]["console"], infos[1]["console"], str(tmp_path / "ttyGONE")))
        t0 = time.monotonic()
        rc, out, err = cli(capsys, "provision", "--csv", str(csvp), pin="0000")
        dt = time.monotonic() - t0
        assert rc == 1  # the third box is absent
        assert "2 of 3 boxes provisioned" in out and "no device at" in out
        assert "acme-0001" in out and "device_id" in out.splitlines()[0]
        for info, dev in zip(infos, ("acme-0001", "acme-0002")):
            with ConsoleClient(info["console"]) as c:
                v = c.cmd("get")["values"]
            assert (v["device_id"], v["fleet_id"], v["plate"]) == (dev, "acme", "B-AC 1" + dev[-2:])
        rc, out, _ = cli(capsys, "provision", "--csv", str(csvp), "--json", pin="0000")
        res = json.loads(out)["results"]
        per_box = [r["seconds"] for r in res if r["result"] == "ok"]
        assert len(per_box) == 2
        print("\nprovision one box (set 5 keys + selftest + status): %.2f s; 3-row CSV: %.2f s"
              % (min(per_box), dt))
    finally:
        for vb in vbs:
            vb.stop()


def test_csv_errors_name_line_and_column(tmp_path):
    p = tmp_path / "f.csv"
    p.write_text("port,device_id,vin\n/dev/null,a1,WVWZZZ1JZXW00000I\n")
    with pytest.raises(ConfigCLIError, match="line 2: vin: bad value"):
        read_csv(str(p))
    p.write_text("port,device_id,colour\n/dev/null,a1,red\n")
    with pytest.raises(ConfigCLIError, match="unknown column 'colour'"):
        read_csv(str(p))
    p.write_text("device_id\na1\n")
    with pytest.raises(ConfigCLIError, match="'port' or 'serial'"):
        read_csv(str(p))


def test_no_answer_is_one_line_error(tmp_path, capsys):
    import os

    m, s = os.openpty()
    try:
        rc, _, err = cli(capsys, os.ttyname(s), "status")
        assert rc == 2 and "no answer from the box console" in err and err.count("\n") == 1
    finally:
        os.close(m)
        os.close(s)


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_console_on_the_repl_stream(runtime, tmp_path):
    """On a board the console shares the USB REPL stream (StdioUart): machine mode works there too."""
    import subprocess
    import sys

    root = __import__("os").path.dirname(__import__("os").path.dirname(__file__))
    script = tmp_path / "sio.py"
    script.write_text(
        "import sys, time\nsys.path.insert(0, %r)\n"
        "from firmware.console import Console, StdioUart\nfrom firmware.config import Config\n"
        "c = Console(StdioUart(), Config(), version='t')\nn = 0\n"
        "for i in range(300):\n    n += c.poll()\n    if n >= 2: break\n    time.sleep(0.01)\n" % root)
    exe = sys.executable if runtime == "cpython" else micropython_binary()
    p = subprocess.Popen([exe, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    p.stdin.write(b"!get plate\n!set plate X\n")
    p.stdin.flush()
    out, _ = p.communicate(timeout=20)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    assert lines[0] == {"ok": True, "key": "plate", "value": ""}
    assert lines[1]["ok"] is False and "login" in lines[1]["error"]
