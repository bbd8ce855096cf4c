# Flash wear measurement (run by tools/bench/bench_store.py under the MicroPython VM):
#   micropython wear_run.py SECONDS NBLOCKS SEGMENT_BYTES MAX_BYTES ACK(0/1) [BLOCK_BYTES]
# Drives SECONDS of 1 Hz fixes (+ events) through BlockEncoder + Store on littlefs2 over testbed/flashsim.py
# (NBLOCKS x 4 KiB NOR flash) and prints "RESULT k=v ..." with erase counts.
import gc
import sys

import vfs

import drive_gen
from firmware import codec
from firmware.store import Store
from testbed.flashsim import FlashSim


def main():
    seconds = int(sys.argv[1])
    nblocks = int(sys.argv[2])
    seg = int(sys.argv[3])
    maxb = int(sys.argv[4])
    ack = int(sys.argv[5])
    blk_bytes = int(sys.argv[6]) if len(sys.argv) > 6 else 512
    bd = FlashSim(nblocks)
    vfs.VfsLfs2.mkfs(bd, readsize=256, progsize=256, lookahead=256)
    vfs.mount(vfs.VfsLfs2(bd, readsize=256, progsize=256, lookahead=256), "/w")
    e0 = bd.total_erases()
    p0 = bd.programmed
    s = Store("/w/store", max_bytes=maxb, segment_bytes=seg)
    enc = codec.BlockEncoder("wear-0001", 1, max_bytes=blk_bytes)
    n_app = 0
    nrec = 0

    def put(blk, fs, ls, prio, count):
        s.append(blk, fs, ls, prio, count)
        if ack:
            s.ack(fs)

    for rec in drive_gen.drive(11, seconds):
        rec["seq"] = s.next_seq()
        nrec += 1
        if rec["type"] == "pos":
            if not enc.add(rec):
                put(enc.finish(), enc.first_seq, enc.last_seq, 0, enc.count)
                n_app += 1
                enc.add(rec)
        else:
            ev = codec.BlockEncoder("wear-0001", 1, max_bytes=blk_bytes)
            ev.add(rec)
            put(ev.finish(), ev.first_seq, ev.last_seq, 1, ev.count)
            n_app += 1
        if nrec % 500 == 0:
            gc.collect()
    put(enc.finish(), enc.first_seq, enc.last_seq, 0, enc.count)
    n_app += 1
    er = bd.erases
    mx = 0
    for e in er:
        if e > mx:
            mx = e
    st = s.stats()
    print("RESULT seconds=%d records=%d appends=%d erases=%d max_block_erases=%d programmed=%d used=%d "
          "evicted=%d"
          % (seconds, nrec, n_app, bd.total_erases() - e0, mx, bd.programmed - p0, st["used_bytes"],
             st["evicted_blocks"]))


main()
