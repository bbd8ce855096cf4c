# Power-cut fault injection (run by tests/test_powercut.py and tools/bench/bench_store.py under the real
# MicroPython VM; needs vfs.VfsLfs2, so CPython cannot run it).
#
#   micropython powercut_run.py NCUTS [WORKER NWORKERS [SECONDS [SEED]]]
#
# 1. Reference run: a deterministic drive (tests/mp/drive_gen.py, 1 Hz positions + events) is encoded
#    with firmware.codec.BlockEncoder and appended to firmware.store.Store on littlefs2 over
#    testbed/flashsim.py; the store operations (seq allocations, appends, agent acks) are recorded, and the
#    bytes programmed on the flash counted.
# 2. For each cut point c (NCUTS points spread over the programmed bytes, this worker's share): start
#    from the freshly formatted image, replay the store operations with power cut after c programmed
#    bytes (the write crossing c is torn), then power up, mount, open the store and check: every block
#    whose append() returned is read back byte-identical (and is not reported acked unless ack()
#    was called), an interrupted block is either absent or intact, nothing else appears, next_seq()
#    is above every sequence number handed out before the cut, and appending continues (the new block
#    is listed, and for every 4th cut point read back after another reboot).
# Output: one "FAIL cut=<c> ..." line per failure, then a summary line "RESULT k=v ...".
import gc
import sys
import time

import vfs

from firmware import codec
from firmware.store import Store
from testbed.flashsim import FlashSim, PowerCut

NBLOCKS = 96
MAX_BYTES = [96 * 1024]  # [0]: 6 KiB with the "evict" argument (the drive needs ~10 KiB: evictions)
SEG = [4096]  # 2 KiB in evict mode
LFS_RW = 256  # littlefs read/program size: a NOR page
ROOT = "/pc/store"


def build_ops(seconds, seed):
    """Encode the drive once; return the list of store operations and the record count."""
    import drive_gen

    ops = []  # ('seq', n) | ('append', block, first, last, prio, count) | ('ack', first)
    # sequence numbers are handed out by the store: allocate them here exactly as the box would
    # (the replay calls next_seq the same number of times, so it hands out the same numbers)
    seq = [0]
    pending = [0]

    def next_seq():
        pending[0] += 1
        s = seq[0]
        seq[0] += 1
        return s

    def flush_seq():
        if pending[0]:
            ops.append(("seq", pending[0]))
            pending[0] = 0

    enc = codec.BlockEncoder("pc-0001", 7, max_bytes=512)
    nrec = 0
    nblk = 0
    for rec in drive_gen.drive(seed, seconds):
        rec["seq"] = next_seq()
        nrec += 1
        if rec["type"] == "pos":
            if not enc.add(rec):
                blk = enc.finish()
                flush_seq()
                ops.append(("append", blk, enc.first_seq, enc.last_seq, 0, enc.count))
                nblk += 1
                enc.add(rec)
        else:
            ev = codec.BlockEncoder("pc-0001", 7, max_bytes=512)
            ev.add(rec)
            blk = ev.finish()
            flush_seq()
            ops.append(("append", blk, ev.first_seq, ev.last_seq, 1, ev.count))
            nblk += 1
        # the agent acknowledges every third block a little later
        if nblk and nblk % 3 == 0 and ops[-1][0] == "append" and ops[-1][4] == 0:
            ops.append(("ack", ops[-1][2]))
    blk = enc.finish()
    flush_seq()
    ops.append(("append", blk, enc.first_seq, enc.last_seq, 0, enc.count))
    return ops, nrec


def fresh_flash():
    bd = FlashSim(NBLOCKS)
    vfs.VfsLfs2.mkfs(bd, readsize=LFS_RW, progsize=LFS_RW, lookahead=LFS_RW)
    return bd


def mount(bd):
    try:
        vfs.umount("/pc")
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(bd, readsize=LFS_RW, progsize=LFS_RW, lookahead=LFS_RW), "/pc")


def _live(s):
    out = {}
    for b in s.blocks:  # the index as lists (Store.blocks)
        if b[7] == 0:
            out[b[3]] = 1
    return out


def replay(bd, ops, log, evicted_by_op=None):
    """Run ops against a store on bd; log collects what returned before a PowerCut. With
    evicted_by_op (reference run), records which blocks each op evicted."""
    mount(bd)
    s = Store(ROOT, max_bytes=MAX_BYTES[0], segment_bytes=SEG[0])
    for i in range(len(ops)):
        op = ops[i]
        log["op"] = i
        before = _live(s) if evicted_by_op is not None else None
        if op[0] == "seq":
            for _ in range(op[1]):
                log["seqs"].append(s.next_seq())
        elif op[0] == "append":
            log["inflight"] = op
            s.append(op[1], op[2], op[3], op[4], op[5])
            log["inflight"] = None
            log["committed"][op[2]] = op
        else:
            log["acking"] = op[1]
            s.ack(op[1])
            log["acking"] = None
            log["acked"][op[1]] = 1
        if before is not None:
            after = _live(s)
            gone = [fs for fs in before if fs not in after and fs not in log["acked"]]
            evicted_by_op.append(gone)
    log["op"] = -1
    return s


def _evicted_before(fs, op_index, evicted_by_op):
    for i in range(0, op_index + 1):
        if fs in evicted_by_op[i]:
            return True
    return False


def new_log():
    return {"seqs": [], "committed": {}, "acked": {}, "inflight": None, "acking": None, "op": -1}


def check(bd, log, cut, evicted_by_op):
    """Power up after the cut and verify; returns an error string or None."""
    try:
        mount(bd)
        s = Store(ROOT, max_bytes=MAX_BYTES[0], segment_bytes=SEG[0])
    except Exception as e:  # noqa
        return "mount/open failed: %r" % (e,)
    blocks = {}
    for fs, ls, prio, data in s.peek(100000):
        if fs in blocks:
            return "block %d listed twice" % fs
        blocks[fs] = (ls, prio, data)
    for fs in log["committed"]:
        op = log["committed"][fs]
        if fs in log["acked"]:
            if fs in blocks:
                return "acked block %d came back" % fs
            continue
        if fs not in blocks:
            if log["acking"] == fs:
                continue  # the ack was in flight: either way is fine
            if _evicted_before(fs, log["op"], evicted_by_op):
                continue  # evicted (counted) to make room, before or during the interrupted op
            return "committed block %d lost" % fs
        if blocks[fs][2] != op[1] or blocks[fs][0] != op[3] or blocks[fs][1] != op[4]:
            return "committed block %d damaged" % fs
    for fs in blocks:
        if fs not in log["committed"]:
            inf = log["inflight"]
            if inf is None or inf[2] != fs or blocks[fs][2] != inf[1]:
                return "unexpected block %d" % fs
    top = max(log["seqs"]) if log["seqs"] else -1
    q = s.next_seq()
    if q <= top:
        return "next_seq %d repeats (had handed out up to %d)" % (q, top)
    # the box carries on
    enc = codec.BlockEncoder("pc-0001", 8, max_bytes=512)
    enc.add({"type": "tamper", "seq": q, "t_ms": 5, "utc_s": -1, "reason": "power_loss", "value": cut})
    blk = enc.finish()
    try:
        s.append(blk, q, q, 3, enc.count)
    except Exception as e:  # noqa
        return "append after reboot failed: %r" % (e,)
    got = [x for x in s.peek(100000) if x[0] == q]
    if len(got) != 1 or got[0][3] != blk:
        return "block appended after reboot not listed"
    if cut % 4:
        return None  # every 4th cut point also checks the new block across another reboot
    mount(bd)
    s2 = Store(ROOT, max_bytes=MAX_BYTES[0], segment_bytes=SEG[0])
    got = [x for x in s2.peek(100000) if x[0] == q]
    if len(got) != 1 or got[0][3] != blk:
        return "block appended after reboot not read back"
    if s2.next_seq() <= q:
        return "next_seq repeats after second reboot"
    return None


def main():
    ncuts = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    worker = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    nworkers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 1500
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    if len(sys.argv) > 6 and sys.argv[6] == "evict":
        MAX_BYTES[0] = 6 * 1024
        SEG[0] = 2048
    t0 = time.ticks_ms()
    # big buffers first (the retained blocks of build_ops would fragment the heap)
    bd = fresh_flash()
    image = bd.snapshot()
    ops, nrec = build_ops(seconds, seed)
    gc.collect()
    # reference run
    work = bd.data
    bd.load(image)
    log = new_log()
    evicted_by_op = []
    sref = replay(bd, ops, log, evicted_by_op)
    n_evicted = sref.stats()["evicted_blocks"]
    total = bd.programmed + 16 * bd.total_erases()
    nappend = len(log["committed"])
    ref_erases = bd.total_erases()
    gc.collect()
    fails = 0
    done = 0
    cut_in_append = 0
    for i in range(worker, ncuts, nworkers):
        # spread over the programmed bytes, odd offsets so cuts land inside pages and frames
        cut = (i * total) // ncuts + (i * 37) % 97
        bd = FlashSim(NBLOCKS, buffer=work)
        bd.load(image)
        log = new_log()
        bd.arm(cut)
        try:
            replay(bd, ops, log)
            err = "no power cut happened"
            if cut < total - 200:
                print("FAIL cut=%d %s" % (cut, err))
                fails += 1
            done += 1
            continue
        except PowerCut:
            pass
        if log["inflight"] is not None:
            cut_in_append += 1
        bd = bd.power_cycle()
        err = check(bd, log, cut, evicted_by_op)
        if err:
            print("FAIL cut=%d %s" % (cut, err))
            fails += 1
        done += 1
        gc.collect()
    print("RESULT cuts=%d fails=%d records=%d blocks=%d ops=%d programmed_bytes=%d ref_erases=%d "
          "cuts_in_append=%d evicted_blocks=%d elapsed_ms=%d" % (done, fails, nrec, nappend, len(ops), total,
                                                                 ref_erases, cut_in_append, n_evicted,
                                                                 time.ticks_diff(time.ticks_ms(), t0)))


main()
