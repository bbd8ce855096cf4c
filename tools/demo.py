"""paydbox demo: the main job end to end on one machine.

Mosquitto on a free local port -> a virtual box (the real firmware in the MicroPython VM replaying a
bundled drive, link UART on a pty) -> the edge agent on that pty -> the broker -> the reference
consumer -> the trip table and an HTML/PNG report. Everything it starts, it stops.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRACE = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")


class DemoError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return
        time.sleep(0.1)
    raise DemoError("timed out after %d s waiting for %s" % (timeout, what))


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Processes:
    """Children started by the demo, stopped in reverse order whatever happens."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = []

    def start(self, name, cmd, env=None):
        log = open(os.path.join(self.logdir, name + ".log"), "wb")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE if name == "virtual-box" else log, stderr=log,
                             env=env, cwd=ROOT, start_new_session=True)
        self.procs.append((name, p, log))
        return p

    def check(self, name, p):
        if p.poll() is not None:
            raise DemoError("%s exited early (status %s); see %s" % (
                name, p.returncode, os.path.join(self.logdir, name + ".log")))

    def stop_all(self):
        for name, p, log in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=10)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            log.close()
        self.procs = []


def start_mosquitto(procs, workdir):
    exe = (shutil.which("mosquitto")
           or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None))
    if exe is None:
        raise DemoError("mosquitto is not installed (make demo installs Debian's mosquitto; or `apt-get "
                        "install mosquitto`)")
    port = free_port()
    conf = os.path.join(workdir, "mosquitto.conf")
    with open(conf, "w") as f:
        # max_queued_messages 0: never drop QoS 1 messages queued for a slow consumer (the default
        # of 1000 loses data under a backlog, see docs/fleet.md)
        f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
                % port)
    p = procs.start("mosquitto", [exe, "-c", conf])
    wait_for(lambda: port_open(port) or p.poll() is not None, 15, "mosquitto to listen")
    procs.check("mosquitto", p)
    return port


def bin_path(name):
    cand = os.path.join(os.path.dirname(sys.executable), name)
    return cand if os.path.exists(cand) else name


def add_arguments(p):
    p.add_argument("--trace", default=DEFAULT_TRACE,
                   help="trace the virtual box drives (default: the bundled commute)")
    p.add_argument("--out", default=os.path.join(ROOT, "out"),
                   help="where the report and the consumer database go")
    p.add_argument("--speed", type=float, default=50.0, help="replay speed-up factor of the virtual box")
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    p.add_argument("--device", default="demo-car-01", help="device id given to the virtual box")
    p.add_argument("--keep-logs", action="store_true",
                   help="print where the component logs are and keep them")


def run(args):
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="paydbox-demo-")
    procs = Processes(work)
    t0 = time.monotonic()
    try:
        print("paydbox demo: trace %s" % os.path.relpath(args.trace, ROOT))
        port = start_mosquitto(procs, work)
        broker = "mqtt://127.0.0.1:%d" % port
        print("  broker      mosquitto on %s" % broker)
        db = os.path.join(args.out, "fleet.sqlite")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        ingest = procs.start("ingest", [bin_path("paydbox"), "ingest", "--broker", broker, "--db", db,
                                        "--once-idle", "3600"])
        time.sleep(1.0)
        procs.check("ingest", ingest)

        box_dir = os.path.join(work, "box")
        provision(box_dir, args.device, "demo")
        link = os.path.join(work, "box-link")
        vbox = procs.start("virtual-box", [bin_path("paydbox"), "virtual-box", "--trace", args.trace,
                                           "--dir", box_dir, "--link-pty-link", link, "--speed",
                                           str(args.speed), "--exit-at-end"])
        ready = json.loads(vbox.stdout.readline().decode() or "{}")
        if not ready:
            procs.check("virtual-box", vbox)
            raise DemoError("virtual box did not report its ptys")
        link_dev = ready.get("link", link)
        print("  box         real firmware in the MicroPython VM, link UART on %s" % link_dev)

        agent_conf = os.path.join(work, "agent.toml")
        with open(agent_conf, "w") as f:
            f.write(AGENT_TOML % {"serial": link_dev, "port": port, "db": os.path.join(work, "agent.sqlite"),
                                  "device": ready.get("device", "paydbox-0001")})
        agent = procs.start("agent", [bin_path("paydbox-agent"), "--config", agent_conf])
        print("  edge agent  %s -> %s" % (link_dev, broker))
        print("  consumer    paydbox ingest -> %s" % os.path.relpath(db, ROOT))
        print("driving", end="", flush=True)
        # the virtual box exits once the trace is over and the agent has acknowledged every block
        while vbox.poll() is None:
            if time.monotonic() - t0 > args.timeout:
                raise DemoError("the drive did not finish within %d s" % args.timeout)
            procs.check("agent", agent)
            procs.check("ingest", ingest)
            print(".", end="", flush=True)
            time.sleep(2)
        print()
        if vbox.returncode != 0:
            raise DemoError("virtual box failed (status %s); see %s/virtual-box.log"
                            % (vbox.returncode, work))
        # let the agent publish its queue and the consumer store it
        # ... and hold every record of it: the table's RECORDS column must read held == expected
        wait_for(lambda: _consumer_has_trip(db), 60, "the consumer to store every record of the trip")
    finally:
        procs.stop_all()
    table = subprocess.run([bin_path("paydbox"), "trips", "--db", db], capture_output=True, text=True)
    print(table.stdout, end="")
    if table.returncode != 0:
        raise DemoError("trips failed: %s" % table.stderr.strip())
    trips = json.loads(subprocess.run([bin_path("paydbox"), "trips", "--db", db, "--json"],
                                      capture_output=True, text=True, check=True).stdout)
    report = os.path.join(args.out, "report.html")
    paths = []
    for ext in (".html", ".png", ".gpx", ".geojson"):
        out = report[:-5] + ext
        r = subprocess.run([bin_path("paydbox"), "report", str(trips[-1]["id"]), "--db", db, "-o", out],
                           capture_output=True, text=True)
        if r.returncode == 0:
            paths.append(out)
        else:
            print("  (%s not written: %s)" % (ext, r.stderr.strip()))
    print("report: %s" % ", ".join(os.path.relpath(p, os.getcwd()) for p in paths))
    print("done in %.0f s" % (time.monotonic() - t0))
    if args.keep_logs:
        print("logs: %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def provision(box_dir, device_id, fleet_id):
    """What a fitter does with `paydbox config PORT set ...`, done offline on the box's filesystem."""
    sys.path.insert(0, ROOT)
    from firmware.config import Config

    os.makedirs(box_dir, exist_ok=True)
    cfg = Config.load(os.path.join(box_dir, "config.json"))
    cfg.set("device_id", device_id)
    cfg.set("fleet_id", fleet_id)


def _consumer_has_trip(db):
    """A closed trip is in the consumer's database, and complete (every record from trip_start to
    trip_end)."""
    import sqlite3

    from tools.consumer import db as consumer_db

    if not os.path.exists(db):
        return False
    try:
        con = consumer_db.connect(db, create=False)
        try:
            trips = consumer_db.list_trips(con)
        finally:
            con.close()
    except sqlite3.Error:  # the consumer is still creating its tables
        return False
    return any(t["closed"] and t["complete"] for t in trips)


AGENT_TOML = """
[device]
fleet = "demo"
id = ""

[serial]
url = "%(serial)s"
baudrate = 115200

[queue]
path = "%(db)s"

[agent]
status_interval_s = 5

[mqtt]
host = "127.0.0.1"
port = %(port)d
tls = false
"""
