"""Host tests for tools/trace/cli.py: NMEA import round trip on the real-receiver corpus, accel CSV, info,
TraceWriter, record (GNSS over a pty), gzip traces under the MicroPython VM."""
import json
import os
import subprocess
import threading
import time

import pytest

from hw.replay import ReplaySession, TraceError
from tools.cli import main as cli_main
from tools.trace import cli as tr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def replay_gnss_bytes(path, step_ms=50, seed=1):
    s = ReplaySession(path, chunk_seed=seed, rxbuf=1 << 20)
    out = bytearray()
    t = 0
    reads = 0
    while True:
        s.advance(t)
        b = s.gnss_uart.read()
        if b:
            out += b
            reads += 1
        if s.done and not s.gnss_uart.any():
            break
        t += step_ms
    assert s.gnss_uart.overflows == 0
    return bytes(out), reads


def nmea_files(d):
    out = []
    for root, _dirs, files in os.walk(d):
        for f in files:
            if f.endswith(".log") or f.endswith(".nmea") or f.endswith(".txt"):
                out.append(os.path.join(root, f))
    return sorted(out)


def test_import_every_shared_log_round_trips(shared_nmea_dir, tmp_path):
    files = nmea_files(shared_nmea_dir)
    assert len(files) >= 40
    for i, f in enumerate(files):
        out = str(tmp_path / ("t%d.jsonl" % i) if i % 2 else tmp_path / ("t%d.jsonl.gz" % i))
        res = tr.import_nmea(f, out)
        raw = open(f, "rb").read()
        assert res["bytes"] == len(raw)
        got, reads = replay_gnss_bytes(out)
        assert got == raw, "%s: replayed bytes differ from the file" % f
        info = tr.trace_info(out)
        assert info["gnss"]["bytes"] == len(raw)
        assert info["accel"] is None


def test_import_timeline_from_sentences(tmp_path):
    log = (b"# header comment\r\n"
           b"$GPGGA,235959.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4B\r\n"
           b"$GPGSV,1,1,00*79\n"
           b"\x00\x00junk\xff\r"
           b"$GPRMC,000000.50,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"
           b"$GPRMC,000001.50,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A")
    p = tmp_path / "a.nmea"
    p.write_bytes(log)
    out = str(tmp_path / "a.jsonl")
    tr.import_nmea(str(p), out)
    lines = [json.loads(x) for x in open(out)]
    assert lines[0]["format"] == "paydbox-trace" and lines[0]["duration_s"] == 2.5
    assert lines[0]["start_utc"] == "1994-03-23T23:59:59Z"
    ts = [(o["t"], o.get("d") or o.get("b64")) for o in lines[1:]]
    # untimed lines take the previous timed sentence's time; midnight wrap followed
    assert [t for t, _ in ts] == [0.0, 0.0, 1.5, 2.5]
    assert "b64" in lines[2]  # NUL/0xff junk kept as bytes
    got, _ = replay_gnss_bytes(out)
    assert got == log


def test_timeline_discontinuities():
    segs = [b"$GPRMC,100000.00,A*00\r\n", b"$GPRMC,100001.00,A*00\r\n", b"$GPRMC,090000.00,A*00\r\n",
            b"$GPRMC,090001.00,A*00\r\n", b"$GPGLL,4916.45,N,12311.12,W,090003.00,A*00\r\n"]
    times, disc, first = tr.nmea_timeline(segs)
    assert times == [0, 1000, 2000, 3000, 5000] and disc == 1 and first == 36000000


def test_accel_csv_import_and_replay(tmp_path):
    nmea = tmp_path / "g.nmea"
    nmea.write_bytes(b"".join(b"$GPRMC,1200%02d.00,A,,,,,,,010120,,*00\r\n" % i for i in range(4)))
    csv = tmp_path / "a.csv"
    rows = (["time;ax;ay;az"]
            + ["%.2f;%.3f;%.3f;%.3f" % (100 + i / 100.0, 0.01 * (i % 7), -0.5, 1.0) for i in range(300)])
    csv.write_text("\n".join(rows) + "\n")
    out = str(tmp_path / "x.jsonl.gz")
    rc = cli_main(["trace", "import", "--nmea", str(nmea), "--accel-csv", str(csv), "--accel-columns",
                   "time,ax,ay,az", "--accel-unit", "g", "-o", out])
    assert rc == 0
    info = tr.trace_info(out)
    assert info["accel"]["samples"] == 300 and info["accel"]["rate_hz"] == 100
    assert info["streams"]["accel"] == 3
    from hw.lis3dh import LIS3DH

    s = ReplaySession(out)
    d = LIS3DH(s.i2c, range_g=2)
    ys = []
    for t in range(100, 3200, 100):
        s.advance(t)
        n = d.read_fifo()
        ys += [d.xyz_mg[3 * j + 1] for j in range(n)]
    assert len(ys) == 299 and set(ys) == {-500}
    bad = tmp_path / "bad.csv"
    bad.write_text("time,ax,ay,az\n1.0,0,0,1\n1.01,0,zz,1\n")
    with pytest.raises(ValueError, match="line 3: column ay"):
        tr.read_accel_csv(str(bad), "time,ax,ay,az", "g")
    with pytest.raises(ValueError, match="no column 'q'"):
        tr.read_accel_csv(str(bad), "time,ax,ay,q", "g")


def test_info_cli_and_errors(tmp_path, capsys):
    out = str(tmp_path / "w.jsonl")
    with tr.TraceWriter(out, {"device": {"id": "x", "source": "simulate"}, "gnss": {"baud": 9600},
                              "accel": {"chip": "lis3dh", "rate_hz": 100, "unit": "mg"},
                              "power": {"nominal_mv": 12600}}) as w:
        w.power(0.0, 12600, 1)
        for k in range(5):
            w.gnss(k * 1.0, b"$GPRMC,,V,,,,,,,,,,N*53\r\n")
            if k != 2:
                w.accel(k * 1.0, 100, [[0, 0, 1000]] * 100)
        w.truth(4.0, "pos", lat=48.1, lon=11.5, speed_mps=0.0)
        w.power(4.5, 12100, 0)
    assert cli_main(["trace", "info", out, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["duration_s"] == 5.0 and info["streams"] == {"gnss": 5, "accel": 4, "power": 2, "truth": 1}
    assert info["gap_count"] == 1 and info["gaps"][0]["stream"] == "accel"
    assert info["power"] == {"mv_min": 12100, "mv_max": 12600, "ign_changes": 1}
    assert cli_main(["trace", "info", out]) == 0
    assert "gaps: 1" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "paydbox-trace", "version": 1}\n{"t": -1, "s": "gnss"}\n')
    with pytest.raises(TraceError, match="line 2: field 't'"):
        tr.trace_info(str(bad))
    assert cli_main(["trace", "info", str(bad)]) == 2
    assert "paydbox: error: " in capsys.readouterr().err
    w = tr.TraceWriter(str(tmp_path / "o.jsonl"), {})
    w.gnss(2.0, b"a")
    with pytest.raises(ValueError, match="before the previous"):
        w.gnss(1.0, b"b")
    w.abort()


def test_gzip_trace_replays_under_micropython(tmp_path):
    from tools.mpvm import micropython_binary

    exe = micropython_binary()
    out = str(tmp_path / "g.jsonl.gz")
    data = b"".join(b"$GPGGA,%06d.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n" % i
                    for i in range(60))
    with tr.TraceWriter(out, {"gnss": {"baud": 9600}, "accel": {"chip": "lis3dh", "rate_hz": 100}}) as w:
        for i in range(60):
            w.accel(i * 1.0, 100, [[i, -i, 1000]] * 100)
            w.gnss(i * 1.0, data[i * 70:(i + 1) * 70])
    assert open(out, "rb").read(2) == b"\x1f\x8b"
    script = tmp_path / "r.py"
    script.write_text(
        "from hw.replay import ReplaySession\nfrom hw.lis3dh import LIS3DH\n"
        "s = ReplaySession(%r)\nd = LIS3DH(s.i2c)\nb = bytearray()\nt = 0\nn = 0\n"
        "while not s.done:\n    t += 100\n    s.advance(t)\n    n += d.read_fifo()\n"
        "    x = s.gnss_uart.read()\n    if x: b.extend(x)\n"
        "import binascii\nprint(n, d.overruns, len(b), binascii.crc32(b))\n" % out)
    p = subprocess.run([exe, str(script)], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, MICROPYPATH=ROOT), timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    import binascii

    n, ovr, nb, crc = map(int, p.stdout.split())
    assert (ovr, nb, crc) == (0, len(data), binascii.crc32(data))
    assert n == 5999


def test_record_gnss_from_pty(tmp_path):
    import pty

    master, slave = pty.openpty()
    import tty

    tty.setraw(slave)
    name = os.ttyname(slave)
    sent = b"".join(b"$GPGGA,%06d.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n" % i
                    for i in range(5))

    def feed():
        time.sleep(0.3)  # after the recorder opened the port (pyserial flushes input on open)
        for i in range(5):
            os.write(master, sent[i * 70:(i + 1) * 70])
            time.sleep(0.2)

    th = threading.Thread(target=feed)
    th.start()
    out = str(tmp_path / "rec.jsonl")
    h = tr.record(name, out, baud=115200, duration_s=1.9, poll_ms=10)
    th.join()
    os.close(master)
    os.close(slave)
    assert h["device"]["source"] == "record"
    got, _ = replay_gnss_bytes(out)
    assert got == sent
    info = tr.trace_info(out)
    assert info["streams"]["gnss"] >= 5 and 0.6 <= info["span_s"] <= 1.7


def test_linux_backends(tmp_path):
    from hw.linux import LinuxUART
    from testbed.blockdev import FileBlockDevice

    u = LinuxUART("loop://", 9600)
    assert u.any() == 0 and u.read() is None
    u.write(b"$GPTXT,hi*00\r\n")
    time.sleep(0.05)
    buf = bytearray(8)
    assert u.readinto(buf) == 8 and bytes(buf) == b"$GPTXT,h"
    assert u.read() == b"i*00\r\n"
    u.close()
    with pytest.raises(OSError):
        LinuxUART("/dev/does-not-exist", 9600)
    p = str(tmp_path / "bd.img")
    bd = FileBlockDevice(p, 512, 8)
    assert os.path.getsize(p) == 4096 and bd.ioctl(4, 0) == 8 and bd.ioctl(5, 0) == 512
    bd.writeblocks(2, b"xyz", 5)
    bd.ioctl(3, 0)
    bd.close()
    bd = FileBlockDevice(p, 512, 8)
    buf = bytearray(5)
    bd.readblocks(2, buf, 4)
    assert bytes(buf) == b"\xffxyz\xff"
    bd.ioctl(6, 2)
    bd.readblocks(2, buf, 4)
    assert bytes(buf) == b"\xff" * 5
    with pytest.raises(OSError):
        bd.writeblocks(8, b"a")


def test_record_accel_path_with_model_behind_fake_smbus(tmp_path, monkeypatch):
    # no hardware: the LIS3DH model of a replay session stands in for smbus2, advanced to wall time
    import hw.linux

    src = str(tmp_path / "src.jsonl")
    with tr.TraceWriter(src, {"gnss": {"baud": 9600}, "accel": {"chip": "lis3dh", "rate_hz": 100}}) as w:
        for k in range(3):
            w.accel(float(k), 100, [[4 * (100 * k + i), 0, 1000] for i in range(100)])
    sess = ReplaySession(src)
    t0 = time.monotonic()

    class FakeBus:
        def __init__(self, n):
            pass

        def readfrom_mem_into(self, addr, reg, buf):
            sess.advance(max(sess.clock.now, int((time.monotonic() - t0) * 1000)))
            sess.i2c.readfrom_mem_into(addr, reg, buf)

        def writeto_mem(self, addr, reg, buf):
            sess.i2c.writeto_mem(addr, reg, buf)

    monkeypatch.setattr(hw.linux, "SMBusI2C", FakeBus)
    out = str(tmp_path / "rec.jsonl")
    tr.record("loop://", out, i2c_bus=1, duration_s=2.5, poll_ms=20, clock=lambda: time.monotonic())
    info = tr.trace_info(out)
    assert info["accel"]["rate_hz"] == 100 and 200 <= info["accel"]["samples"] <= 260
    xs = []
    for line in open(out).readlines()[1:]:
        o = json.loads(line)
        xs += [s[0] for s in o["mg"]]
    assert all(b - a == 4 for a, b in zip(xs, xs[1:])), "no sample lost or repeated"
    assert json.loads(open(out).readline())["accel"]["overruns"] == 0
