"""Host-side codec checks (CPython, hypothesis): random records of every type round-trip exactly through
`from firmware import codec` (the same encoder the box runs) and `firmware.decoder`, in any block size;
any single-byte damage is reported as CodecError."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import codec, decoder, records

I32 = st.integers(-(2**31), 2**31 - 1)
NAT = st.integers(0, 2**31)
LAT = st.integers(-900000000, 900000000)
LON = st.integers(-1800000000, 1800000000)
COURSE = st.integers(-1, 35999)
TXT = st.one_of(st.sampled_from(records.STRINGS), st.text(max_size=12))


def _fields(tname):
    out = {}
    for name, kind in records.fields(tname):
        if kind == "a":
            out[name] = LAT
        elif kind == "o":
            out[name] = LON
        elif kind == "c":
            out[name] = COURSE
        elif kind == "s":
            out[name] = TXT
        elif kind == "b":
            out[name] = st.binary(max_size=40)
        else:
            out[name] = I32
    return out


def _without_defaults(r):
    """A record as it decodes: optional fields holding their default are left out (docs/record-format.md)."""
    return {k: v for k, v in r.items() if not (k in records.OPTIONAL and v == records.OPTIONAL[k])}


def record_strategy():
    per_type = []
    for tname in records.TYPE_NAMES:
        per_type.append(st.fixed_dictionaries(dict(type=st.just(tname), t_ms=st.integers(0, 2**40),
                                                   utc_s=st.integers(-1, 2**34), **_fields(tname))))
    return st.one_of(*per_type)


@st.composite
def record_lists(draw):
    recs = draw(st.lists(record_strategy(), min_size=1, max_size=40))
    seq = draw(st.integers(0, 2**32 - 100000))
    for r in recs:
        seq += draw(st.sampled_from([1, 1, 1, 2, 7, 1000]))
        r["seq"] = seq
    return recs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_lists(), st.sampled_from([96, 200, 512, 4096]))
def test_random_records_roundtrip(recs, max_bytes):
    enc = codec.BlockEncoder("dev-\u00e9", 12, max_bytes=max_bytes)
    out = []
    refused = set()
    i = 0
    while i < len(recs):
        try:
            ok = enc.add(recs[i])
        except ValueError:
            # only a record that cannot fit even an empty block may be refused: check it alone
            assert enc.count == 0 or enc._hdr is None
            alone = codec.BlockEncoder("dev-\u00e9", 12, max_bytes=max_bytes)
            try:
                fits = alone.add(recs[i])
            except ValueError:
                fits = False
            assert not fits, "refused a record that fits an empty block: %r" % (recs[i],)
            refused.add(recs[i]["seq"])
            i += 1
            continue
        if ok:
            i += 1
        else:
            blk = enc.finish()
            assert len(blk) <= max_bytes
            out.extend(decoder.decode_block(blk)[1])
    blk = enc.finish()
    assert len(blk) <= max_bytes
    out.extend(decoder.decode_block(blk)[1])
    # optional fields holding their default come back absent (docs/record-format.md)
    want = {r["seq"]: _without_defaults(r) for r in recs}
    for r in out:
        assert r == want[r["seq"]]
    # every record that was accepted came out, exactly once, in order
    assert [r["seq"] for r in out] == [r["seq"] for r in recs if r["seq"] not in refused]
    if max_bytes >= 512:
        # a 512-byte block holds any record these strategies draw (strings <= 12, bytes <= 40)
        assert not refused


@settings(max_examples=100, deadline=None)
@given(record_lists(), st.data())
def test_damage_detected(recs, data):
    enc = codec.BlockEncoder("d", 1, max_bytes=65536)
    for r in recs:
        assert enc.add(r)
    blk = bytearray(enc.finish())
    # intact: every record back
    assert decoder.decode_block(bytes(blk))[1] == [_without_defaults(r) for r in recs]
    pos = data.draw(st.integers(0, len(blk) - 1))
    blk[pos] ^= data.draw(st.integers(1, 255))
    try:
        decoder.decode_block(bytes(blk))
    except decoder.CodecError as e:
        assert 0 <= e.offset <= len(blk)
    else:
        raise AssertionError("damage at byte %d not detected" % pos)


def test_worked_example_in_the_spec():
    """docs/record-format.md's worked example: these records encode to exactly the bytes printed there."""
    import os
    import re

    doc = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                            "record-format.md")).read()
    part = doc[doc.index("## Worked example"):]
    n = int(re.search(r"The block is (\d+) bytes", part).group(1))
    hexed = part[part.index("```", part.index("The block is")) + 3:]
    want = bytes.fromhex(hexed[:hexed.index("```")].strip().replace("\n", " "))
    recs = [
        {"type": "pos", "seq": 1000, "t_ms": 60000, "utc_s": 849427200, "lat_e7": 481370000,
         "lon_e7": 115750000, "speed_mmps": 13900, "course_cdeg": 9000, "hdop_x10": 9, "sats": 11},
        {"type": "pos", "seq": 1001, "t_ms": 61000, "utc_s": 849427201, "lat_e7": 481370002,
         "lon_e7": 115751868, "speed_mmps": 13950, "course_cdeg": 9010, "hdop_x10": 9, "sats": 11},
        {"type": "pos", "seq": 1002, "t_ms": 62000, "utc_s": 849427202, "lat_e7": 481370000,
         "lon_e7": 115753740, "speed_mmps": 13950, "course_cdeg": 9005, "hdop_x10": 9, "sats": 11},
        {"type": "event", "seq": 1004, "t_ms": 62400, "utc_s": 849427202, "kind": "harsh_brake",
         "dur_ms": 800, "peak_mg": 450, "mean_mg": 310, "speed_start_mmps": 13950, "speed_end_mmps": 9000,
         "lat_e7": 481370000, "lon_e7": 115754000, "course_cdeg": 9005},
    ]
    enc = codec.BlockEncoder("box-0001", 3, 512)
    for r in recs:
        assert enc.add(r)
    blk = enc.finish()
    assert blk == want and len(blk) == n
    assert decoder.decode_block(blk)[1] == recs


def test_the_box_never_loads_the_decoder():
    """The box only encodes: its Box modules, loaded from its ROMFS image as runner.load_box does, leave
    firmware.decoder (the reader: host side) unloaded, and the image does not hold it."""
    import subprocess

    from tools.installer import flash
    from tools.mpvm import micropython_binary
    from tools.trace.replay import _MOUNT, image_for

    code = _MOUNT % image_for() + (
        "import sys\nfrom firmware import runner\nrunner.load_box()\n"
        "print(sorted(m for m in sys.modules if m.startswith('firmware.')))\n")
    p = subprocess.run([micropython_binary(), "-X", "heapsize=2M", "-c", code], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    loaded = p.stdout.split("\n")[-2]
    assert "firmware.codec" in loaded and "firmware.store" in loaded and "firmware.decoder" not in loaded
    assert "firmware/decoder.py" not in flash.source_files("unix")


class _HeapFull:
    """Wraps the block encoder's range coder: its `fail_at`-th coding call raises MemoryError (a value
    the box could not allocate half-way through a record)."""

    def __init__(self, w, fail_at):
        self._w = w
        self.calls = 0
        self.fail_at = fail_at

    def __getattr__(self, name):
        f = getattr(self._w, name)
        if name not in ("uint", "raw", "bit", "sint") or not callable(f):
            return f

        def call(*a):
            self.calls += 1
            if self.calls == self.fail_at:
                raise MemoryError("heap full")
            return f(*a)
        return call


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_lists(), st.integers(1, 400))
def test_a_memory_error_inside_a_record_leaves_a_block_that_decodes(recs, fail_at):
    """A MemoryError while a record is coded leaves no half record in the stream: the block (closed
    after it) decodes, CRC and all, to exactly the records add() accepted."""
    enc = codec.BlockEncoder("box-0001", 3, 4096)
    enc._w = _HeapFull(enc._w, fail_at)
    accepted = []
    failed = 0
    for r in recs:
        try:
            if not enc.add(dict(r)):
                break
        except MemoryError:
            failed += 1
            continue
        accepted.append(r)
    if not accepted:
        return
    blk = enc.finish()
    assert decoder.decode_block(blk)[1] == [_without_defaults(r) for r in accepted]
    assert failed <= 1


def test_a_memory_error_at_finish_keeps_the_block_open():
    """No heap for the finished block: finish() raises MemoryError and the encoder is as before (the box
    goes on adding records and retries at its next pass); the block then holds every record, the same
    bytes as without the failure."""
    recs = [{"type": "pos", "seq": 10 + i, "t_ms": 1000 * i, "utc_s": 849427200 + i,
             "lat_e7": 481370000 + 7 * i, "lon_e7": 115750000 + 1868 * i, "speed_mmps": 13900,
             "course_cdeg": 9000, "hdop_x10": 9, "sats": 11} for i in range(30)]
    enc = codec.BlockEncoder("box-0001", 3, 512)
    for r in recs[:20]:
        assert enc.add(r)
    real = bytearray
    try:
        def no_heap(n):
            raise MemoryError("heap full")
        codec.bytearray = no_heap
        try:
            enc.finish()
        except MemoryError:
            pass
        else:
            raise AssertionError("finish() did not raise")
    finally:
        del codec.bytearray
    assert bytearray is real
    for r in recs[20:]:
        assert enc.add(r)
    blk = enc.finish()
    assert decoder.decode_block(blk)[1] == recs
    ref = codec.BlockEncoder("box-0001", 3, 512)
    for r in recs:
        assert ref.add(r)
    assert blk == ref.finish()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_lists(), st.sampled_from([96, 200, 512, 4096]))
def test_finish_view_is_the_block_finish_makes(recs, max_bytes):
    """finish_view() (the Box's commit: the block built in the encoder's own buffer) gives the bytes
    finish() gives, block after block of the same encoder."""
    a = codec.BlockEncoder("box-0001", 3, max_bytes)
    b = codec.BlockEncoder("box-0001", 3, max_bytes)
    def add_both(r):
        try:
            ok = a.add(dict(r))
        except ValueError:
            ok = None
        try:
            assert b.add(dict(r)) == ok
        except ValueError:
            assert ok is None
        return ok

    for r in recs:
        if add_both(r) is False:   # the block is full: both finish it, the record opens the next
            assert bytes(a.finish_view()) == b.finish()
            add_both(r)
    assert bytes(a.finish_view()) == b.finish()
