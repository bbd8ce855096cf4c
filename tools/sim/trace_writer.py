"""Minimal trace v1 writer (docs/trace-format.md) used by the simulator.

Lines may be added slightly out of order (a GNSS epoch is produced while a 1 s accelerometer chunk
is still being filled); the writer keeps a small time-ordered buffer and only flushes lines older than
`window_s` behind the newest time seen, so the file is in non-decreasing `t` order as the format requires.
"""
import gzip
import heapq
import json
import shutil
import tempfile

FORMAT = "paydbox-trace"
VERSION = 1


def _printable(b):
    for c in b:
        if not (32 <= c < 127 or c in (10, 13)):
            return False
    return True


class TraceWriter:
    def __init__(self, path, header, window_s=5.0):
        if not isinstance(header, dict):
            raise ValueError("header: must be a dict")
        h = {"format": FORMAT, "version": VERSION}
        h.update((k, v) for k, v in header.items() if k not in ("format", "version"))
        self.path = str(path)
        self.header = h
        # the body goes to a temporary file first so close() can still update the header (duration)
        self._f = tempfile.TemporaryFile()
        self._heap = []
        self._seq = 0
        self._newest = 0.0
        self._last_written = 0.0
        self.window_s = window_s
        self.lines = 0

    def _write_obj(self, obj):
        self._f.write(json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n")
        self.lines += 1

    def add(self, t, s, **fields):
        """Queue one stream line at time t (seconds since trace start)."""
        if t < 0:
            raise ValueError("t: negative time %r" % t)
        t = round(float(t), 3)
        if t < self._last_written:
            raise ValueError("t: %.3f is older than the already written %.3f" % (t, self._last_written))
        obj = {"t": t, "s": s}
        obj.update(fields)
        heapq.heappush(self._heap, (t, self._seq, obj))
        self._seq += 1
        if t > self._newest:
            self._newest = t
            self._flush(self._newest - self.window_s)

    def gnss(self, t, data):
        if _printable(data):
            self.add(t, "gnss", d=data.decode("ascii"))
        else:
            import base64
            self.add(t, "gnss", b64=base64.b64encode(data).decode("ascii"))

    def _flush(self, upto):
        h = self._heap
        while h and h[0][0] <= upto:
            t, _, obj = heapq.heappop(h)
            self._last_written = t
            self._write_obj(obj)

    def close(self, header_update=None):
        self._flush(float("inf"))
        if header_update:
            self.header.update(header_update)
        body = self._f
        body.seek(0)
        if self.path.endswith(".gz"):
            raw = open(self.path, "wb")
            # mtime=0 so the bytes are identical for a seed
            out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
        else:
            raw = None
            out = open(self.path, "wb")
        try:
            out.write(json.dumps(self.header, separators=(",", ":")).encode("utf-8") + b"\n")
            shutil.copyfileobj(body, out, 1 << 20)
        finally:
            out.close()
            if raw is not None:
                raw.close()
            body.close()
        self.lines += 1

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def read_trace(path):
    """Yield (header, lines) for a trace v1 file (plain or gzip by magic). Minimal reader for evaluate/tests."""
    with open(path, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        first = f.readline()
        try:
            header = json.loads(first)
        except ValueError:
            raise ValueError("%s: line 1: header is not JSON" % path)
        if header.get("format") != FORMAT:
            raise ValueError("%s: header field 'format' is %r, not %r" % (path, header.get("format"), FORMAT))
        if header.get("version") != VERSION:
            raise ValueError("%s: header field 'version' %r is not supported" % (path, header.get("version")))
        lines = [json.loads(line) for line in f if line.strip()]
    return header, lines
