"""Agent -> broker throughput, Mosquitto (MQTT 5 and 3.1.1) and a 3.1.1-only broker (NATS server,
MQTT mode: the agent falls back by itself). A simulated box (real link protocol over a pty) feeds the
real agent process; a 3.1.1 subscriber counts the blocks. docs/brokers.md quotes these figures."""
import os
import statistics
import tempfile
import threading
import time

from firmware import decoder
from testbed.simbox import AgentProc, SimBox, wait_for, write_agent_config
from tools.brokers import Mosquitto, NatsMqtt

NOTE = ("The real agent process fed by a simulated box (real link protocol over a pty), publishing to a "
        "broker started by the bench on the same host; a 3.1.1 subscriber counts the blocks. Median of the "
        "runs, on a shared machine (the figures move with its load).")


def _one(kind, proto, blocks, work):
    import paho.mqtt.client as mqtt

    b = (NatsMqtt if kind == "nats" else Mosquitto)(os.path.join(work, "broker")).start()
    box = SimBox("bench-b").start()
    got = set()
    t_last = [0.0]
    lock = threading.Lock()
    ready = threading.Event()

    def on_msg(c, u, m):
        if m.topic.endswith("/records"):
            with lock:
                got.add(decoder.decode_header(bytes(m.payload))[0]["first_seq"])
                t_last[0] = time.monotonic()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv311,
                    clean_session=False)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("paydbox/f1/bench-b/#", qos=1)
    c.on_subscribe = lambda cl, u, mid, rcs, p: ready.set()
    c.on_message = on_msg
    c.connect(b.host, b.port)
    c.loop_start()
    ready.wait(10)
    cfg = write_agent_config(os.path.join(work, "a.toml"), "f1", "bench-b", box.path,
                             os.path.join(work, "q.db"), b.host, b.port, extra_mqtt={"protocol": proto})
    ag = AgentProc(cfg, os.path.join(work, "a.log")).start()
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        box.produce(blocks)
        ok = wait_for(lambda: len(got) >= blocks, 120)
        rate = blocks / (t_last[0] - t0) if ok else None
        fell_back = "falling back to MQTT 3.1.1" in ag.log()
    finally:
        ag.terminate()
        c.loop_stop()
        c.disconnect()
        box.stop()
        b.stop()
    return rate, fell_back


def run(quick=False):
    blocks = 200 if quick else 1000
    runs = 1 if quick else 3
    out = {"blocks per run (32 records each)": blocks, "runs": runs}
    for kind, proto, label in (("mosquitto", "5", "Mosquitto MQTT 5"),
                               ("mosquitto", "3.1.1", "Mosquitto MQTT 3.1.1"),
                               ("nats", "auto", "NATS MQTT (3.1.1 only), agent on auto")):
        rates = []
        fb = False
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="paydbox-bench-brokers-") as w:
                r, fb = _one(kind, proto, blocks, w)
            if r is not None:
                rates.append(r)
        out[label + " blocks/s (median)"] = round(statistics.median(rates)) if rates else None
        if kind == "nats":
            out["agent fell back to 3.1.1 on NATS"] = fb
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
