# The trace format (docs/trace-format.md): its constants, its reader and its writer, in one home.
# Used by the replay backend (hw/replay.py, MicroPython and CPython), `paydbox trace` (record, import,
# info), the simulator (tools/sim) and every test or benchmark that reads a trace.
#
# A trace is JSON lines, optionally gzip: line 1 the header {"format": FORMAT, "version": VERSION, ...},
# then one object per line {"t": seconds since the trace start (non-decreasing), "s": stream, ...}:
#   gnss  {"d": ASCII text} or {"b64": bytes}      accel {"rate": Hz, "mg": [[x, y, z], ...]}
#   power {"mv": supply mV, "ign": 0/1}             truth {"kind": ..., ...}   note {"text": ...}
# The reader runs on MicroPython (json, binascii; deflate for gzip) and never holds the whole trace.
# The writer is host only (CPython: gzip, heapq, tempfile imported when used).
import binascii
import json

from hw.compat import IS_MICROPYTHON, const

FORMAT = "paydbox-trace"
VERSION = const(1)


class TraceError(ValueError):
    """A malformed trace: the message names the line and field."""


def open_trace(path):
    """Binary stream of the (possibly gzip-compressed) trace, detected by the gzip magic bytes."""
    f = open(path, "rb")
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        if IS_MICROPYTHON:
            import deflate

            return deflate.DeflateIO(f, deflate.GZIP)
        import gzip

        return gzip.GzipFile(fileobj=f, mode="rb")
    return f


class LineReader:
    """Line iterator over a binary stream with a block buffer (MicroPython's readline is per byte)."""

    def __init__(self, stream, block=4096):
        self._s = stream
        # one buffer for the whole trace (grown only for a line longer than it): reading allocates
        # nothing but the lines themselves, so the harness does not fragment the firmware's heap
        self._buf = bytearray(block)
        self._mv = memoryview(self._buf)
        self._pos = 0
        self._end = 0
        self._eof = False
        self.lineno = 0
        self._pad = bytearray(b" " * block)  # readline_padded's line buffer, spaces past the line
        self._pad_mv = memoryview(self._pad)
        self._spaces = b" " * block
        self._pad_used = 0

    def _span(self):
        """(start, end) of the next line (without its newline) in self._buf, or None at the end."""
        while True:
            buf = self._buf
            i = buf.find(b"\n", self._pos, self._end)
            if i >= 0:
                a = self._pos
                self._pos = i + 1
                self.lineno += 1
                return a, i
            if self._eof:
                if self._pos < self._end:
                    a = self._pos
                    self._pos = self._end
                    self.lineno += 1
                    return a, self._end
                return None
            rest = self._end - self._pos
            if rest == len(buf):  # a line longer than the buffer: double it
                nb = bytearray(2 * len(buf))
                nb[0:rest] = buf
                self._buf = buf = nb
                self._mv = memoryview(nb)
            elif rest <= self._pos:  # the tail moves down to where it does not overlap itself
                self._mv[0:rest] = self._mv[self._pos : self._end]
            elif rest:
                tail = bytes(self._mv[self._pos : self._end])
                buf[0:rest] = tail
            self._pos = 0
            self._end = rest
            n = self._s.readinto(self._mv[rest:])
            if not n:
                self._eof = True
            else:
                self._end = rest + n

    def readline(self):
        """Next line without its newline (bytes), or None at the end."""
        sp = self._span()
        return None if sp is None else bytes(self._mv[sp[0] : sp[1]])

    def readline_padded(self):
        """Next line in a buffer reused for every line (valid until the next call), padded with
        spaces past its end (JSON ignores them); None at the end, "" for a blank line. Parsing it
        where it lies needs no new block of the line's length (1.6 KB for a 1 s line at 100 Hz), which
        a fragmented heap may not have (`paydbox replay --board-heap`)."""
        sp = self._span()
        if sp is None:
            return None
        a, e = sp
        n = e - a
        if n > len(self._pad):
            self._pad = bytearray(b" " * (2 * n))
            self._pad_mv = memoryview(self._pad)
            self._spaces = b" " * len(self._pad)
            self._pad_used = 0
        pb = self._pad
        mv = self._pad_mv
        mv[0:n] = self._mv[a:e]
        if self._pad_used > n:
            mv[n : self._pad_used] = memoryview(self._spaces)[n : self._pad_used]
        self._pad_used = n
        i = 0
        while i < n and pb[i] in b" \t\r":
            i += 1
        return pb if i < n else ""

    def close(self):
        try:
            self._s.close()
        except Exception:
            pass


def parse_header(line, where="trace line 1"):
    try:
        h = json.loads(line)
    except ValueError:
        raise TraceError("%s: header is not JSON" % where)
    if not isinstance(h, dict):
        raise TraceError("%s: header is not a JSON object" % where)
    if h.get("format") != FORMAT:
        raise TraceError("%s: field 'format' is %r, expected %r" % (where, h.get("format"), FORMAT))
    if h.get("version") != VERSION:
        raise TraceError("%s: field 'version' is %r, this reader knows %d"
                         % (where, h.get("version"), VERSION))
    return h


def parse_line(raw, lineno):
    """-> (t_ms, stream, obj). Raises TraceError naming the line and field."""
    try:
        o = json.loads(raw)
    except ValueError:
        raise TraceError("trace line %d: not JSON" % lineno)
    if not isinstance(o, dict):
        raise TraceError("trace line %d: not a JSON object" % lineno)
    t = o.get("t")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
        raise TraceError("trace line %d: field 't' is %r, expected a number >= 0" % (lineno, t))
    s = o.get("s")
    if not isinstance(s, str):
        raise TraceError("trace line %d: field 's' is %r, expected a stream name" % (lineno, s))
    return int(t * 1000 + 0.5), s, o


def gnss_bytes(o, lineno):
    d = o.get("d")
    if d is not None:
        if not isinstance(d, str):
            raise TraceError("trace line %d: field 'd' is not a string" % lineno)
        return d.encode()
    b = o.get("b64")
    if not isinstance(b, str):
        raise TraceError("trace line %d: gnss line has neither 'd' nor 'b64'" % lineno)
    try:
        return binascii.a2b_base64(b)
    except Exception:
        raise TraceError("trace line %d: field 'b64' is not valid base64" % lineno)


def iter_trace(path):
    """The header of a trace, then its line objects one by one (never the whole file in memory);
    TraceError (a ValueError) naming the file, line and field."""
    r = LineReader(open_trace(path))
    try:
        first = r.readline()
        if first is None:
            raise TraceError("%s: empty file, no header" % path)
        yield parse_header(first, "%s line 1" % path)
        while True:
            raw = r.readline()
            if raw is None:
                return
            if raw.strip():
                yield parse_line(raw, r.lineno)[2]
    finally:
        r.close()


def read_trace(path):
    """(header, [line objects]) of a whole trace (host convenience: evaluate, tests, benchmarks)."""
    it = iter_trace(path)
    header = next(it)
    return header, list(it)


def printable(b):
    """True when a gnss line carries these bytes as text ("d"), else base64 ("b64")."""
    for c in b:
        if not (32 <= c < 127 or c == 10 or c == 13):
            return False
    return True


class TraceWriter:
    """Writes a trace (host only). `t` is seconds since the trace start. With window_s=0 (default) lines
    must come in time order (ValueError if not); with window_s > 0 lines up to window_s older than the
    newest are put in order (the simulator produces a GNSS epoch while an accelerometer chunk is still
    filling). close() writes the header first: its `duration_s` becomes max(given, end of the last line
    or accelerometer chunk), then `header_update` applies. gzip when `path` ends with .gz (mtime 0:
    the same lines give the same bytes). The body waits in a temporary file until close()."""

    def __init__(self, path, header, window_s=0.0):
        import tempfile

        if not isinstance(header, dict):
            raise ValueError("header: expected a dict")
        self.path = str(path)
        self.header = {"format": FORMAT, "version": VERSION}
        self.header.update((k, v) for k, v in header.items() if k not in ("format", "version"))
        self.window_s = window_s
        self._f = tempfile.TemporaryFile()
        self._heap = []
        self._seq = 0
        self._newest = 0.0
        self._last_t = 0.0
        self.end_t = 0.0
        self.lines = 0

    def add(self, t, s, **fields):
        """One line of stream s at time t (seconds)."""
        import heapq

        if self._f is None:
            raise ValueError("trace %s: already closed" % self.path)
        t = round(float(t), 3)
        if t < 0 or t < self._last_t:
            raise ValueError("t: %.3f is before the previous line's t %.3f (trace lines are in time order)"
                             % (t, self._last_t))
        obj = {"t": t, "s": s}
        obj.update(fields)
        end = t
        if s == "accel" and fields.get("rate"):
            end = t + len(fields.get("mg") or ()) / float(fields["rate"])
        if end > self.end_t:
            self.end_t = end
        heapq.heappush(self._heap, (t, self._seq, obj))
        self._seq += 1
        if t > self._newest:
            self._newest = t
        self._flush(self._newest - self.window_s)

    def _flush(self, upto):
        import heapq

        h = self._heap
        while h and h[0][0] <= upto:
            t, _, obj = heapq.heappop(h)
            self._last_t = t
            self._f.write(json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n")
            self.lines += 1

    def gnss(self, t, data):
        data = bytes(data)
        if not data:
            return
        if printable(data):
            self.add(t, "gnss", d=data.decode("ascii"))
        else:
            self.add(t, "gnss", b64=binascii.b2a_base64(data).decode("ascii").strip())

    def accel(self, t, rate, samples_mg):
        if rate <= 0:
            raise ValueError("rate: %r must be > 0" % (rate,))
        mg = [[int(s[0]), int(s[1]), int(s[2])] for s in samples_mg]
        self.add(t, "accel", rate=int(rate) if rate == int(rate) else float(rate), mg=mg)

    def power(self, t, mv, ign):
        self.add(t, "power", mv=int(mv), ign=1 if ign else 0)

    def truth(self, t, kind, **fields):
        self.add(t, "truth", kind=kind, **fields)

    def note(self, t, text):
        self.add(t, "note", text=text)

    def close(self, header_update=None):
        if self._f is None:
            return
        import gzip
        import shutil

        self._flush(float("inf"))
        body, self._f = self._f, None
        d = self.header.get("duration_s") or 0
        self.header["duration_s"] = round(max(float(d), self.end_t), 3)
        if header_update:
            self.header.update(header_update)
        body.seek(0)
        raw = open(self.path, "wb")
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) \
            if self.path.endswith(".gz") else raw
        try:
            out.write(json.dumps(self.header, separators=(",", ":")).encode("utf-8") + b"\n")
            shutil.copyfileobj(body, out, 1 << 20)
        finally:
            if out is not raw:
                out.close()
            raw.close()
            body.close()
        self.lines += 1

    def abort(self):
        """Drop what was written (nothing reaches `path`)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.close()
        else:
            self.abort()
