"""Installer figures against the virtual box (MicroPython VM on a pty; no UART speed limit, so the
figures are the protocol and VM cost; a real 115200-baud USB-serial link adds ~9 s per 100 kB).

    python -m tools.bench.bench_installer
"""
import os
import tempfile
import time

from tools.installer import flash as F
from tools.installer.config_cli import ConsoleClient, provision
from tools.installer.virtual_box import ReplBox, VirtualBox


def _trace(path):
    import json

    hdr = {"format": "paydbox-trace", "version": 1, "device": {"id": "bench", "source": "simulate"},
           "start_utc": None, "duration_s": 600.0, "gnss": {"baud": 9600, "rate_hz": 1}}
    with open(path, "w") as f:
        f.write(json.dumps(hdr) + "\n")
        for i in range(600):
            f.write(json.dumps({"t": float(i), "s": "note", "text": "idle"}) + "\n")
    return path


def run(quick=False):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        files = F.build("unix", out_dir=os.path.join(d, "build"))
        out["build_cold_s"] = round(time.monotonic() - t0, 3)
        out["firmware_bytes"] = sum(len(v) for v in files.values())
        out["firmware_files"] = len(files)
        rb = ReplBox(os.path.join(d, "box"), os.path.join(d, "box.repl"))
        rb.start()
        try:
            t0 = time.monotonic()
            rep = F.flash(rb.link, board="unix", progress=False)
            out["flash_full_s"] = round(time.monotonic() - t0, 3)
            t0 = time.monotonic()
            rep = F.flash(rb.link, board="unix", progress=False)
            out["flash_noop_s"] = round(time.monotonic() - t0, 3)
            assert rep["changed"] == []
        finally:
            rb.stop()
        vb = VirtualBox(_trace(os.path.join(d, "t.jsonl")), os.path.join(d, "box"), speed=1, source="flashed")
        try:
            t0 = time.monotonic()
            info = vb.start()
            out["boot_flashed_vm_s"] = round(time.monotonic() - t0, 3)
            csvp = os.path.join(d, "fleet.csv")
            with open(csvp, "w") as f:
                f.write("port,device_id,fleet_id,vin,plate\n%s,bench-0001,acme,WVWZZZ1JZXW000001,B-AC 101\n"
                        % info["console"])
            t0 = time.monotonic()
            res = provision(csvp, "0000")
            out["provision_one_box_s"] = round(time.monotonic() - t0, 3)
            out["provision_ok"] = 1 if res[0]["result"] in ("ok", "selftest") and not res[0]["error"] else 0
            with ConsoleClient(info["console"]) as c:
                n = 10 if quick else 50
                t0 = time.monotonic()
                for _ in range(n):
                    c.cmd("status")
                out["console_roundtrip_ms"] = round((time.monotonic() - t0) * 1000 / n, 2)
        finally:
            vb.stop()
    return out


if __name__ == "__main__":
    for k, v in run().items():
        print("%-24s %s" % (k, v))
