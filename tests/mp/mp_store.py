# Firmware tests for firmware/store.py (MicroPython: littlefs2 over testbed/flashsim.py; CPython: temp dir).
from firmware.store import Store
from mptest import assert_eq, assert_raises
from store_fs import fresh_root, remount


def _blk(i, n=100):
    return bytes([(i * 7 + k) & 0xFF for k in range(n)])


def test_append_peek_ack():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    for i in range(10):
        s.append(_blk(i), i * 10, i * 10 + 9, 0 if i % 3 else 2, 10)
    p = s.peek(100)
    assert_eq(len(p), 10, "peek count")
    # highest prio first, then oldest
    assert_eq([x[0] for x in p[:4]], [0, 30, 60, 90], "prio 2 first")
    assert_eq([x[0] for x in p[4:]], [10, 20, 40, 50, 70, 80], "then oldest")
    assert_eq(p[0][3], _blk(0), "block bytes")
    assert_eq(s.ack(30), True, "ack")
    assert_eq(s.ack(30), False, "ack twice")
    assert_eq(s.ack(12345), False, "ack unknown")
    assert_eq(s.stats()["blocks"], 9, "live blocks")
    root = remount(root, bd)
    s2 = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    p2 = s2.peek(100)
    assert_eq(len(p2), 9, "after reboot")
    assert_eq(30 in [x[0] for x in p2], False, "acked block stays acked")
    for x in p2:
        assert_eq(x[3], _blk(x[0] // 10), "intact after reboot")


def test_ack_frees_segments():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=1024)
    for i in range(30):
        s.append(_blk(i, 200), i, i, 0, 1)
    used = s.stats()["used_bytes"]
    for i in range(25):
        s.ack(i)
    st = s.stats()
    assert_eq(st["blocks"], 5, "live")
    assert_eq(st["used_bytes"] < used // 3, True, "segments deleted: %d of %d" % (st["used_bytes"], used))


def test_seq_never_repeats():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    seen = {}
    for boot in range(4):
        for i in range(300 if boot == 0 else 7):
            q = s.next_seq()
            assert_eq(q in seen, False, "seq %d repeated" % q)
            seen[q] = 1
        if boot == 1:
            s.append(_blk(1), q - 6, q, 1, 7)
        root = remount(root, bd)
        s = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    assert_eq(len(seen), 321, "allocated")


def test_eviction_order_and_counts():
    root, bd = fresh_root()
    s = Store(root, max_bytes=8192, segment_bytes=1024)
    # crash block first (oldest), then a mix of positions and events
    s.append(_blk(0, 150), 0, 0, 4, 1)
    s.append(_blk(1, 150), 1, 1, 2, 1)
    seq = 2
    for i in range(200):
        prio = 1 if i % 5 == 0 else 0
        s.append(_blk(seq, 150), seq, seq + 9, prio, 10)
        seq += 10
    st = s.stats()
    assert_eq(st["used_bytes"] <= 8192, True, "bounded: %d" % st["used_bytes"])
    assert_eq(st["evicted_blocks"] > 100, True, "evicted %d" % st["evicted_blocks"])
    assert_eq(st["evicted_by_prio"][0] > 0, True, "positions evicted")
    live = s.peek(1000)
    prios = [x[2] for x in live]
    assert_eq(prios[0], 4, "crash kept")
    assert_eq(prios[1], 2, "trip summary kept")
    # no position survives that is older than an evicted one: the oldest positions went first
    pos = [x[0] for x in live if x[2] == 0]
    evs = [x[0] for x in live if x[2] == 1]
    if st["evicted_by_prio"][1] == 0:
        assert_eq(len(evs), 40, "all events kept while positions are evicted")
    assert_eq(pos == sorted(pos) and (not pos or pos[0] > 1000), True, "the newest positions remain")
    for x in live:
        assert_eq(x[3], _blk(x[0], 150), "intact")
    total = st["blocks"] + st["evicted_blocks"]
    assert_eq(total, 202, "every block either live or counted as evicted")
    root = remount(root, bd)
    s2 = Store(root, max_bytes=8192, segment_bytes=1024)
    assert_eq(s2.stats()["evicted_blocks"], st["evicted_blocks"], "eviction count persists")
    assert_eq(s2.stats()["blocks"], st["blocks"], "live after reboot")


def test_only_high_prio_evicts_oldest():
    root, bd = fresh_root()
    s = Store(root, max_bytes=4096, segment_bytes=1024)
    for i in range(40):
        s.append(_blk(i, 200), i, i, 3, 1)
    live = [x[0] for x in s.peek(100)]
    assert_eq(live == sorted(live) and live[-1] == 39, True, "newest kept")
    assert_eq(s.stats()["evicted_by_prio"][3], 40 - len(live), "counted")


def test_torn_tail_recovered():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    for i in range(5):
        s.append(_blk(i), i, i, 0, 1)
    seg = root + "/" + s._segname(s.head)
    f = open(seg, "ab")
    f.write(b"\xb7\x00\x64\x00\x05\x00\x00\x00garbage")  # a torn frame header
    f.close()
    root = remount(root, bd)
    s2 = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    assert_eq(s2.stats()["torn_frames"], 1, "torn frame seen")
    assert_eq(len(s2.peek(100)), 5, "committed blocks kept")
    s2.append(_blk(9), 9, 9, 0, 1)
    root = remount(root, bd)
    s3 = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    assert_eq([x[0] for x in s3.peek(100)], [0, 1, 2, 3, 4, 9], "appending continues after a torn tail")


def test_bad_args():
    root, bd = fresh_root()
    assert_raises(ValueError, Store, root, 1000, 4096)
    s = Store(root, max_bytes=64 * 1024, segment_bytes=1024)
    assert_raises(ValueError, s.append, _blk(0), 5, 4, 0, 1)
    assert_raises(ValueError, s.append, _blk(0), 1, 1, 7, 1)
    assert_raises(ValueError, s.append, bytes(2000), 1, 1, 0, 1)
    assert_raises(ValueError, s.append, _blk(0), 1, 1, 0, -1)


def test_record_counts_are_the_callers():
    # the store never decodes a block: its record counts (stats, eviction) are the count the encoder
    # gave with each block, not its seq span (a block can skip seqs: a record refused after its seq)
    root, bd = fresh_root()
    s = Store(root, max_bytes=8192, segment_bytes=1024)
    s.append(_blk(0, 150), 0, 9, 0, 4)
    s.append(_blk(1, 150), 10, 19, 0, 10)
    assert_eq(s.stats()["records"], 14, "records of the live blocks")
    assert_eq(s.blocks[0][6], 4, "count in the index")
    s2 = Store(root, max_bytes=8192, segment_bytes=1024)  # the count survives a mount (frame header)
    assert_eq(s2.stats()["records"], 14, "after a mount")
    seq = 20
    while s2.stats()["evicted_blocks"] == 0:
        s2.append(_blk(seq, 150), seq, seq + 9, 1, 10)
        seq += 10
    assert_eq(s2.stats()["evicted_records"], 14, "the two prio-0 blocks evicted first: 4 + 10 records")


def test_seq_survives_lost_seq_file_after_acks():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=1024)
    top = 0
    for i in range(10):
        a = s.next_seq()
        b = s.next_seq()
        s.append(_blk(i, 300), a, b, 0, b - a + 1)
        s.ack(a)
        top = b
    assert_eq(s.stats()["blocks"], 0, "all acked")
    import os

    os.remove(root + "/seq")  # flash damage: the reservation is gone, every segment was deleted
    root = remount(root, bd)
    s2 = Store(root, max_bytes=64 * 1024, segment_bytes=1024)
    assert_eq(s2.next_seq() > top, True, "no repeat after losing the seq file")


def test_damaged_state_file_does_not_stop_the_store():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=1024)
    s.append(_blk(1), 1, 1, 0, 1)
    s.ack(1)
    s.append(_blk(2), 2, 2, 0, 1)
    f = open(root + "/state", "wb")
    f.write(b"E x y\n")
    f.close()
    root = remount(root, bd)
    s2 = Store(root, max_bytes=64 * 1024, segment_bytes=1024)
    assert_eq(s2.stats()["state_damaged"], 1, "reported")
    assert_eq(2 in [x[0] for x in s2.peek(10)], True, "unacked block kept")


def test_requeue_acked_blocks_still_on_flash():
    # gap repair: the agent lost blocks the box had already seen acknowledged
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    for i in range(6):
        s.append(_blk(i), i * 10, i * 10 + 9, 0, 10)
    for i in range(6):
        s.ack(i * 10)
    assert_eq(s.peek(100), [], "all acked")
    missing, n = s.requeue(20, 39)
    assert_eq((missing, n), ([], 2), "two acked blocks back")
    assert_eq([x[0] for x in s.peek(100)], [20, 30], "live again, in order")
    # seqs past the highest appended are not missing (not yet written); evicted / deleted ones are
    missing, n = s.requeue(50, 500)
    assert_eq((missing, n), ([], 1), "block 50 back, nothing beyond 59 is claimed missing")
    root = remount(root, bd)
    s2 = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    assert_eq([x[0] for x in s2.peek(100)], [20, 30, 50], "requeue survives a reboot")


def test_requeue_reports_what_is_gone():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=1024)
    for i in range(30):
        s.append(_blk(i, 200), i * 2, i * 2 + 1, 0, 2)
    for i in range(25):
        s.ack(i * 2)  # full segments without live blocks are deleted from flash
    missing, n = s.requeue(0, 59)
    assert_eq(len(missing) >= 1 and missing[0][0] == 0, True, "the deleted start is missing: %r" % (missing,))
    held = [x for x in range(60) if not any(a <= x <= b for a, b in missing)]
    assert_eq(held[-1], 59, "the live tail is held")
    assert_eq(len(held) >= 10, True, "at least the 5 live blocks are held")


def test_unget_seq_keeps_seqs_contiguous():
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    a = s.next_seq()
    b = s.next_seq()
    s.unget_seq(a)  # not the last one: ignored
    s.unget_seq(b)
    assert_eq(s.next_seq(), b, "the last seq is handed out again")
    assert_eq(s.next_seq(), b + 1, "then the next")


def _mount_with_little_heap(root):
    """Store(root) with no free block of heap larger than 8 KiB (MicroPython: the heap filled with
    8 KiB ballast, one piece given back; CPython: tracemalloc's peak, index and all, must stay under
    20 KB, less than the 31 KB segment)."""
    import sys

    if sys.implementation.name == "micropython":
        import gc

        gc.collect()
        ballast = []
        try:
            while True:
                ballast.append(bytearray(8192))
        except MemoryError:
            pass
        ballast.pop()
        gc.collect()
        try:
            return Store(root, max_bytes=512 * 1024, segment_bytes=32768)
        finally:
            ballast = None
    import tracemalloc

    tracemalloc.start()
    try:
        st = Store(root, max_bytes=512 * 1024, segment_bytes=32768)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if peak >= 20000:
        raise MemoryError("mount allocated %d bytes at its peak" % peak)
    return st


def test_mount_reads_a_full_segment_in_small_pieces():
    # a 32 KiB segment is indexed a frame at a time: the mount never holds the segment in RAM (it
    # would need a 32 KiB block of heap at boot, a third of a 96 KiB board's)
    root, bd = fresh_root(160)
    s = Store(root, max_bytes=512 * 1024, segment_bytes=32768)
    for i in range(60):
        s.append(_blk(i, 500), i * 10, i * 10 + 9, 0, 10)
    assert_eq(s.stats()["segments"], 1, "one segment of %d bytes" % s.used_bytes())
    root = remount(root, bd)
    st = _mount_with_little_heap(root)
    assert_eq(st.stats()["blocks"], 60, "every block indexed")
    assert_eq(st.peek(1)[0][3], _blk(0, 500), "first block intact")


def test_no_heap_for_the_index_writes_nothing():
    # the index row is made before the frame is written: a MemoryError leaves flash as it was
    root, bd = fresh_root()
    s = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    import os

    s.append(_blk(0), 0, 9, 0, 10)
    seg = root + "/" + [n for n in os.listdir(root) if n.endswith(".seg")][0]
    size = os.stat(seg)[6]

    def no_heap():
        raise MemoryError("no heap")

    s._room_for_row = no_heap
    assert_raises(MemoryError, s.append, _blk(1), 10, 19, 0, 10)
    assert_eq(os.stat(seg)[6], size, "nothing written to flash")
    del s._room_for_row
    s.append(_blk(1), 10, 19, 0, 10)  # the retry
    s2 = Store(remount(root, bd), max_bytes=64 * 1024, segment_bytes=4096)
    assert_eq([x[0] for x in s2.peek(10)], [0, 10], "each block once on flash")
