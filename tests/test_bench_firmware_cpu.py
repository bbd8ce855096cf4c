"""The firmware CPU benchmark measures the firmware it claims to: the VM run is driven by a recording of
a CPython replay, its summary equals the CPython one, and a run that asks its board for anything but
the recorded call fails loudly instead of timing something else (tools/bench/bench_firmware.py)."""
import os

import pytest

from tools.bench import bench_firmware as B


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("cpu")
    trace = B.long_drive(str(d / "drive.jsonl.gz"), seconds=40, accel_hz=100)
    rec = str(d / "io.rec")
    ref = B.record_io(trace, rec)
    return d, rec, ref


def _run(rec, root, fn="main"):
    os.makedirs(root)
    return B._vm("import tools.bench.firmware_cpu_vm as c; c.%s(%r, %r)" % (fn, rec, root),
                 B._VM_HEAP + os.path.getsize(rec))


def test_vm_run_gives_the_cpython_summary(recording):
    d, rec, ref = recording
    r = _run(rec, str(d / "fs1"))
    assert r["summary"] == ref
    assert r["summary"]["records"]["pos"] > 30   # the drive was driven (positions recorded)
    assert r["steps"] == 400 and r["box_ms"] == 40000
    assert r["cpu_s"] > 0 and r["peers_cpu_s"] >= 0


def test_a_run_off_the_recording_fails(recording, tmp_path):
    d, rec, ref = recording
    data = bytearray(open(rec, "rb").read())
    # the first FIFO read of the recording answered as if it were a UART read: the firmware's next
    # call no longer matches what the recording has
    i = data.index(b"i\x18\x2f\x01\x00")
    data[i] = ord("a")
    bad = str(tmp_path / "bad.rec")
    with open(bad, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(RuntimeError, match="firmware asked for"):
        _run(bad, str(tmp_path / "fs"))
