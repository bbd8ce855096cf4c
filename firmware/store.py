# paydbox flash store: power-cut-safe queue of encoded blocks on a mounted VFS directory
# (littlefs2 on the box; a plain directory on CPython). Contract: docs/architecture.md, layout:
# docs/record-format.md ("Flash store").
#
# root/sNNNNNNNN.seg  segment files, each a sequence of frames (20-byte header + block), at most
#                     segment_bytes long; a new segment appears atomically (written as tmp, renamed)
# root/state          acknowledged / evicted blocks + eviction counters (rewritten via tmp + rename)
# root/seq            reserved upper bound of sequence numbers (rewritten via tmp + rename)
import binascii
import os
import struct
from array import array

from hw.compat import const, path_exists

FRAME_MAGIC = const(0xB7)
FRAME_HDR = const(20)  # <BBHIIHH + crc32
SEQ_RESERVE = const(256)
NPRIO = const(5)
_LIVE = const(0)
_ACKED = const(1)
_EVICTED = const(2)
_DUP = const(3)
# The block index in RAM: 20 bytes per block on flash, in chunks of _CHUNK rows, each chunk an
# array('I') of 3 u32 per row (_SEG, _FS, _LS) and an array('H') of 4 u16 per row (fields _W + k:
# _OFF, _LEN, _CNT, _PS); a chunk is 320 bytes, so a long drive's index never needs a large free block
# of heap. (A list of 8 ints per block was ~104 bytes on a 64-bit VM.) Offsets and lengths fit 16
# bits: a segment is at most 65536 bytes.
_SEG = const(0)    # segment number
_FS = const(1)     # first_seq
_LS = const(2)     # last_seq
_W = const(8)      # fields from here on are in the u16 array
_OFF = const(8)    # offset of the block in its segment (after the frame header)
_LEN = const(9)    # block bytes
_CNT = const(10)   # records in the block
_PS = const(11)    # prio << 8 | state (_LIVE, _ACKED, _EVICTED, _DUP)
_ROW = const(3)    # u32 per row
_ROWH = const(4)   # u16 per row
_CHUNK = const(16)
_CSHIFT = const(4)  # 1 << _CSHIFT == _CHUNK


class StoreError(Exception):
    pass


def _sync_file(f):
    f.flush()
    fileno = getattr(f, "fileno", None)
    if fileno is not None and hasattr(os, "fsync"):
        try:
            os.fsync(fileno())
        except (OSError, ValueError, AttributeError):
            pass


def _sync():
    if hasattr(os, "sync"):
        os.sync()


def _write_frame(path, mode, hdr, block):
    """One frame (header + block) written and synced: a new segment ("wb") or the head ("ab")."""
    f = open(path, mode)
    try:
        f.write(hdr)
        f.write(block)
        _sync_file(f)
    finally:
        f.close()


def _write_atomic(path, data):
    tmp = path + ".tmp"
    f = open(tmp, "wb")
    try:
        f.write(data)
        _sync_file(f)
    finally:
        f.close()
    os.rename(tmp, path)
    _sync()


class Store:
    def __init__(self, root, max_bytes=1024 * 1024, segment_bytes=8192):
        if segment_bytes < 256 or segment_bytes > 65536:
            raise ValueError("segment_bytes: 256..65536 expected")
        if max_bytes < 3 * segment_bytes:
            raise ValueError("max_bytes: at least 3 * segment_bytes expected")
        self.root = root.rstrip("/") if len(root) > 1 else root
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        try:
            os.stat(self.root)
        except OSError:
            os.mkdir(self.root)
        self._hdr = bytearray(FRAME_HDR)
        self._mount()

    # ---- paths -------------------------------------------------------------------------------
    def _p(self, name):
        return self.root + "/" + name

    def _segname(self, n):
        return "s%08d.seg" % n

    # ---- mount / recovery --------------------------------------------------------------------
    def _mount(self):
        self._ix = []  # chunks of the block index: u32 part (rows: see _SEG.._PS), in flash order
        self._ixh = []  # u16 part
        self._n = 0  # rows in use
        self.seg_size = {}  # seg number -> bytes
        self.torn_frames = 0
        self.dup_blocks = 0
        self.evicted_blocks = 0
        self.evicted_records = 0
        self.evicted_by_prio = [0] * NPRIO
        self.appended_blocks = 0
        self.seq_write_errors = 0
        self.state_damaged = 0
        self._seq_seen = -1  # highest last_seq ever appended (kept in state: survives deleted segments)
        gone = {}
        for name in ("state.tmp", "seq.tmp", "seg.tmp"):
            if path_exists(self._p(name)):
                os.remove(self._p(name))
        # state file
        try:
            f = open(self._p("state"), "r")
            try:
                txt = f.read()
            finally:
                f.close()
            for line in txt.split("\n"):
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "E" and len(parts) == 3 + NPRIO:
                    self.evicted_blocks = int(parts[1])
                    self.evicted_records = int(parts[2])
                    self.evicted_by_prio = [int(x) for x in parts[3:]]
                elif parts[0] in ("A", "V") and len(parts) == 2:
                    gone[int(parts[1])] = _ACKED if parts[0] == "A" else _EVICTED
                elif parts[0] == "S" and len(parts) == 2:
                    self._seq_seen = int(parts[1])
                else:
                    raise ValueError("state line")
        except OSError:
            pass
        except ValueError:
            # written atomically, so only flash damage gets here: carry on (acked blocks may be sent
            # again, the agent drops duplicates by seq) rather than refuse to store anything
            gone = {}
            self.state_damaged = 1
        segs = []
        for name in os.listdir(self.root):
            if len(name) == 13 and name[0] == "s" and name.endswith(".seg"):
                try:
                    segs.append(int(name[1:9]))
                except ValueError:
                    pass
        segs.sort()
        seen = {}
        max_seq = -1
        last = segs[-1] if segs else -1
        sealed_head = False
        for sn in segs:
            n, torn = self._scan(sn, gone, seen)
            self.seg_size[sn] = n
            if torn:
                self.torn_frames += 1
                if sn == last:
                    sealed_head = True
        for i in range(self._n):
            ls = self._get(i, _LS)
            if ls > max_seq:
                max_seq = ls
        self.head = last
        if last < 0 or sealed_head:
            self.head = last + 1
            self.head_exists = False
        else:
            self.head_exists = True
        self.head_size = self.seg_size.get(self.head, 0) if self.head_exists else 0
        # sequence reservation
        reserved = 0
        try:
            f = open(self._p("seq"), "r")
            try:
                reserved = int(f.read().strip() or "0")
            finally:
                f.close()
        except (OSError, ValueError):
            reserved = 0
        if max_seq > self._seq_seen:
            self._seq_seen = max_seq
        self._next_seq = max(reserved, self._seq_seen + 1)
        self._reserved = self._next_seq  # nothing reserved in this boot yet
        self._drop_dead()
        # the index's room for the next block now, at boot, while the heap is not yet fragmented
        # (the first commit, 60 s into a drive, is where a 96K heap had no 192 B hole for it)
        self._room_for_row()

    # ---- block index -----------------------------------------------------------------------------
    def _room_for_row(self):
        if self._n >> _CSHIFT == len(self._ix):
            self._ix.append(array("I", bytes(4 * _ROW * _CHUNK)))
            self._ixh.append(array("H", bytes(2 * _ROWH * _CHUNK)))

    def _add(self, seg, off, ln, fs, ls, cnt, prio, state):
        i = self._n
        self._room_for_row()
        k = i & (_CHUNK - 1)
        c = self._ix[i >> _CSHIFT]
        o = k * _ROW
        c[o + _SEG] = seg
        c[o + _FS] = fs
        c[o + _LS] = ls
        c = self._ixh[i >> _CSHIFT]
        o = k * _ROWH - _W
        c[o + _OFF] = off
        c[o + _LEN] = ln
        c[o + _CNT] = cnt
        c[o + _PS] = (prio << 8) | state
        self._n = i + 1

    def _get(self, i, f):
        if f < _W:
            return self._ix[i >> _CSHIFT][(i & (_CHUNK - 1)) * _ROW + f]
        return self._ixh[i >> _CSHIFT][(i & (_CHUNK - 1)) * _ROWH + f - _W]

    def _state(self, i):
        return self._ixh[i >> _CSHIFT][(i & (_CHUNK - 1)) * _ROWH + _PS - _W] & 0xFF

    def _prio(self, i):
        return self._ixh[i >> _CSHIFT][(i & (_CHUNK - 1)) * _ROWH + _PS - _W] >> 8

    def _set_state(self, i, state):
        c = self._ixh[i >> _CSHIFT]
        o = (i & (_CHUNK - 1)) * _ROWH + _PS - _W
        c[o] = (c[o] & ~0xFF) | state

    @property
    def blocks(self):
        """The index as lists [seg, off, length, first_seq, last_seq, prio, count, state] (a copy:
        for tests and tools; the box itself reads the packed rows)."""
        out = []
        for i in range(self._n):
            out.append([self._get(i, _SEG), self._get(i, _OFF), self._get(i, _LEN), self._get(i, _FS),
                        self._get(i, _LS), self._prio(i), self._get(i, _CNT), self._state(i)])
        return out

    def _scan(self, sn, gone, seen):
        """Index the frames of segment sn; returns (bytes up to the first torn frame, torn?). Reads
        the segment a frame header and 256 bytes at a time: a whole segment (32 KiB) in one block
        would not fit a 96 KiB heap at boot."""
        path = self._p(self._segname(sn))
        f = open(path, "rb")
        try:
            n = f.seek(0, 2)
            f.seek(0)
            hdr = self._hdr
            buf = bytearray(256)
            mv = memoryview(buf)
            off = 0
            torn = False
            while off < n:
                if n - off < FRAME_HDR or f.readinto(hdr) != FRAME_HDR or hdr[0] != FRAME_MAGIC:
                    torn = True
                    break
                _, prio, ln, fs, ls, cnt, _pad, crc = struct.unpack_from("<BBHIIHHI", hdr, 0)
                if off + FRAME_HDR + ln > n or prio >= NPRIO:
                    torn = True
                    break
                calc = binascii.crc32(memoryview(hdr)[:16])
                left = ln
                while left:
                    k = 256 if left > 256 else left
                    if f.readinto(mv[:k]) != k:
                        break
                    calc = binascii.crc32(mv[:k], calc)
                    left -= k
                if left or calc & 0xFFFFFFFF != crc:
                    torn = True
                    break
                st = gone.get(fs, _LIVE)
                if fs in seen:
                    st = _DUP
                    self.dup_blocks += 1
                else:
                    seen[fs] = 1
                self._add(sn, off + FRAME_HDR, ln, fs, ls, cnt, prio, st)
                off += FRAME_HDR + ln
        finally:
            f.close()
        return n, torn

    # ---- sequence numbers ------------------------------------------------------------------------
    def next_seq(self):
        s = self._next_seq
        if s >= self._reserved:
            try:
                _write_atomic(self._p("seq"), ("%d\n" % (s + SEQ_RESERVE)).encode())
                self._reserved = s + SEQ_RESERVE
            except OSError:
                # flash full: the reservation is tried again at the next seq; a seq handed out now
                # is reused after a reboot only if its block never reached the store (mount takes
                # the highest stored seq), so no stored seq is ever given twice
                self.seq_write_errors += 1
        self._next_seq = s + 1
        return s

    # ---- appending ---------------------------------------------------------------------------
    def used_bytes(self):
        t = 0
        for sn in self.seg_size:
            t += self.seg_size[sn]
        return t

    def append(self, block, first_seq, last_seq, prio, count):
        """Store one block (durable when this returns): its seqs, its priority (0..4) and its number of
        records, `count` (the encoder's: the store never decodes a block)."""
        ln = len(block)
        if prio < 0 or prio >= NPRIO:
            raise ValueError("prio: 0..4 expected")
        if first_seq < 0 or last_seq < first_seq or last_seq > 0xFFFFFFFF:
            raise ValueError("first_seq/last_seq: 0 <= first <= last < 2**32 expected")
        need = ln + FRAME_HDR
        if need > self.segment_bytes:
            raise ValueError("block of %d bytes larger than a segment (%d)" % (ln, self.segment_bytes))
        if count < 0:
            raise ValueError("count: >= 0 expected")
        cnt = count if count < 0xFFFF else 0xFFFF
        self._append(block, first_seq, last_seq, prio, cnt, True)
        self.appended_blocks += 1

    def _append(self, block, first_seq, last_seq, prio, cnt, room):
        ln = len(block)
        need = ln + FRAME_HDR
        # the index row first: a MemoryError must come before the frame is on flash, never leave a
        # block on flash that the index (peek, ack, eviction) does not know until the next mount
        self._room_for_row()
        if self.head_exists and self.head_size + need > self.segment_bytes:
            self.head += 1
            self.head_exists = False
            self.head_size = 0
        if room:
            self._make_room(need)
        h = self._hdr
        struct.pack_into("<BBHIIHH", h, 0, FRAME_MAGIC, prio, ln, first_seq, last_seq, cnt, 0)
        crc = binascii.crc32(block, binascii.crc32(memoryview(h)[:16])) & 0xFFFFFFFF
        struct.pack_into("<I", h, 16, crc)
        name = self._p(self._segname(self.head))
        if not self.head_exists:
            # atomic rotation: a segment appears with its first frame complete
            tmp = self._p("seg.tmp")
            _write_frame(tmp, "wb", h, block)
            os.rename(tmp, name)
            _sync()
            self.head_exists = True
            off = 0
        else:
            try:
                _write_frame(name, "ab", h, block)
                _sync()
            except OSError:
                # flash full or failing: the segment may now end in a torn frame (the mount scan
                # stops there); the next append starts a fresh segment, so no offset is ever wrong
                self.head += 1
                self.head_exists = False
                self.head_size = 0
                raise
            off = self.head_size
        self.head_size = off + need
        self.seg_size[self.head] = self.head_size
        self._add(self.head, off + FRAME_HDR, ln, first_seq, last_seq, cnt, prio, _LIVE)
        if last_seq > self._seq_seen:
            self._seq_seen = last_seq

    def _make_room(self, need):
        limit = self.max_bytes - self.segment_bytes  # one segment of slack for compaction copies
        guard = 0
        while self.used_bytes() + need > limit:
            guard += 1
            if guard > 10000:
                raise StoreError("store cannot make room for %d bytes" % need)
            if self._drop_dead():
                continue
            if not self._reclaim_one():
                raise StoreError("store full: %d bytes used, nothing left to evict" % self.used_bytes())

    def _reclaim_one(self):
        # lowest priority present among live blocks; its oldest block's segment is reclaimed
        victim = -1
        vp = vf = 0
        for i in range(self._n):
            if self._state(i) == _LIVE:
                p = self._prio(i)
                fs = self._get(i, _FS)
                if victim < 0 or p < vp or (p == vp and fs < vf):
                    victim, vp, vf = i, p, fs
        if victim < 0:
            return False
        sn = self._get(victim, _SEG)
        p = vp
        for i in range(self._n):
            if self._get(i, _SEG) == sn and self._state(i) == _LIVE and self._prio(i) == p:
                self._set_state(i, _EVICTED)
                self.evicted_blocks += 1
                self.evicted_records += self._get(i, _CNT)
                self.evicted_by_prio[p] += 1
        self._save_state()
        if sn == self.head and self.head_exists:
            # never compact the segment being appended to: seal it
            self.head += 1
            self.head_exists = False
            self.head_size = 0
        # move the remaining live blocks of the victim segment to the head, then drop the segment
        moving = [i for i in range(self._n) if self._get(i, _SEG) == sn and self._state(i) == _LIVE]
        if moving:
            datas = []
            f = open(self._p(self._segname(sn)), "rb")
            try:
                for i in moving:
                    f.seek(self._get(i, _OFF))
                    datas.append(f.read(self._get(i, _LEN)))
            finally:
                f.close()
            for k in range(len(moving)):
                i = moving[k]
                self._set_state(i, _DUP)  # the copy takes over
                self._append(datas[k], self._get(i, _FS), self._get(i, _LS), self._prio(i),
                             self._get(i, _CNT), False)
        self._drop_dead()
        return True

    def _drop_dead(self):
        """Delete segments (other than the head being appended to) without live blocks."""
        live = {}
        for i in range(self._n):
            if self._state(i) == _LIVE:
                live[self._get(i, _SEG)] = 1
        dropped = False
        for sn in list(self.seg_size.keys()):
            if sn in live or (sn == self.head and self.head_exists):
                continue
            try:
                os.remove(self._p(self._segname(sn)))
            except OSError:
                pass
            del self.seg_size[sn]
            dropped = True
        if dropped:
            self._compact()
            _sync()
        return dropped

    def _compact(self):
        """Drop the rows of deleted segments, keeping the others in order (in place)."""
        j = 0
        for i in range(self._n):
            if self._get(i, _SEG) in self.seg_size:
                if i != j:
                    for part, w in ((self._ix, _ROW), (self._ixh, _ROWH)):
                        src = part[i >> _CSHIFT]
                        so = (i & (_CHUNK - 1)) * w
                        dst = part[j >> _CSHIFT]
                        do = (j & (_CHUNK - 1)) * w
                        for f in range(w):
                            dst[do + f] = src[so + f]
                j += 1
        self._n = j
        del self._ix[(j + _CHUNK - 1) >> _CSHIFT:]
        del self._ixh[(j + _CHUNK - 1) >> _CSHIFT:]

    def _save_state(self):
        parts = ["E %d %d %s\n" % (self.evicted_blocks, self.evicted_records,
                                    " ".join([str(x) for x in self.evicted_by_prio])),
                 "S %d\n" % self._seq_seen]
        for i in range(self._n):
            st = self._state(i)
            if st == _ACKED:
                parts.append("A %d\n" % self._get(i, _FS))
            elif st == _EVICTED:
                parts.append("V %d\n" % self._get(i, _FS))
        _write_atomic(self._p("state"), "".join(parts).encode())

    # ---- reading / acknowledging ---------------------------------------------------------------
    def peek(self, max_blocks=8):
        # the max_blocks live blocks of the highest priority, oldest first: one pass over the index
        # keeping the best so far in order (no allocation per block, no sort of the whole index)
        picked = []
        prios = []  # prio and first_seq of each picked row
        fss = []
        for i in range(self._n):
            ps = self._ixh[i >> _CSHIFT][(i & (_CHUNK - 1)) * _ROWH + _PS - _W]
            if ps & 0xFF != _LIVE:
                continue
            p = ps >> 8
            fs = self._ix[i >> _CSHIFT][(i & (_CHUNK - 1)) * _ROW + _FS]
            k = len(picked)
            while k > 0 and (p > prios[k - 1] or (p == prios[k - 1] and fs < fss[k - 1])):
                k -= 1
            if k < max_blocks:
                picked.insert(k, i)
                prios.insert(k, p)
                fss.insert(k, fs)
                if len(picked) > max_blocks:
                    picked.pop()
                    prios.pop()
                    fss.pop()
        out = []
        for i in picked:
            f = open(self._p(self._segname(self._get(i, _SEG))), "rb")
            try:
                f.seek(self._get(i, _OFF))
                data = f.read(self._get(i, _LEN))
            finally:
                f.close()
            out.append((self._get(i, _FS), self._get(i, _LS), self._prio(i), data))
        return out

    def ack(self, first_seq):
        """The agent holds the block starting at first_seq. Returns False if no such live block."""
        hit = False
        for i in range(self._n):
            if self._get(i, _FS) == first_seq and self._state(i) == _LIVE:
                self._set_state(i, _ACKED)
                hit = True
        if hit:
            self._save_state()
            self._drop_dead()
        return hit

    def requeue(self, lo, hi):
        """Gap repair: blocks overlapping seqs lo..hi that were acknowledged but are still on flash become
        live again, so the link sends them once more. Returns (missing, n): the [lo, hi] parts of the
        committed seqs (up to the highest appended) that no block on flash holds any more (evicted, or
        deleted once acknowledged), and the number of blocks requeued."""
        if hi > self._seq_seen:
            hi = self._seq_seen
        spans = []
        n = 0
        for i in range(self._n):
            st = self._state(i)
            fs = self._get(i, _FS)
            ls = self._get(i, _LS)
            if ls >= lo and fs <= hi and (st == _LIVE or st == _ACKED):
                spans.append((fs, ls))
                if st == _ACKED:
                    self._set_state(i, _LIVE)
                    n += 1
        if n:
            self._save_state()
        spans.sort()
        missing = []
        cur = lo
        for sp in spans:
            if sp[1] < cur:
                continue
            if sp[0] > cur:
                missing.append([cur, sp[0] - 1])
            cur = sp[1] + 1
        if cur <= hi:
            missing.append([cur, hi])
        return missing, n

    def unget_seq(self, seq):
        """Give back the last seq handed out (its record was not stored: a position the privacy or
        thinning mode dropped), so the seqs stored within a boot stay contiguous."""
        if seq == self._next_seq - 1:
            self._next_seq = seq

    def stats(self):
        live = 0
        live_bytes = 0
        records = 0
        for i in range(self._n):
            c = self._ixh[i >> _CSHIFT]
            o = (i & (_CHUNK - 1)) * _ROWH - _W
            if c[o + _PS] & 0xFF == _LIVE:
                live += 1
                live_bytes += c[o + _LEN]
                records += c[o + _CNT]
        return {"used_bytes": self.used_bytes(), "max_bytes": self.max_bytes, "blocks": live,
                "records": records, "live_bytes": live_bytes, "segments": len(self.seg_size),
                "evicted_blocks": self.evicted_blocks, "evicted_records": self.evicted_records,
                "evicted_by_prio": list(self.evicted_by_prio), "torn_frames": self.torn_frames,
                "state_damaged": self.state_damaged,
                "next_seq": self._next_seq}
