# Installer PIN storage: PBKDF2-HMAC-SHA256 (RFC 8018) with a per-box random salt, compared in
# constant time. Runs on MicroPython (hashlib.sha256 only: HMAC is built here) and CPython.
#
# Stored form (config key installer_pin): "pbkdf2-sha256$<iterations>$<salt hex>$<key hex>", 16-byte
# salt from os.urandom, 32-byte key. The iteration count is sized on the box that sets the PIN
# (size_iterations: a timed probe, so a check costs ~CHECK_BUDGET_MS there, under 0.5 s) and stored
# with the hash, so the check runs the same count wherever the value is read. "" = no PIN yet.
import os

from hw.compat import const

try:
    import hashlib
except ImportError:  # pragma: no cover
    import uhashlib as hashlib

try:
    import binascii

    _hexlify = binascii.hexlify
    _unhexlify = binascii.unhexlify
except ImportError:  # pragma: no cover
    _hexlify = None
    _unhexlify = None

PREFIX = "pbkdf2-sha256$"
SALT_BYTES = const(16)
MIN_ITERATIONS = const(1000)        # floor whatever the box's speed
MAX_ITERATIONS = const(200000)      # ceiling (fast hosts / the unix VM)
# sized check time on the box: half the 0.5 s limit (margin for GC, slower clocks)
CHECK_BUDGET_MS = const(250)
_PROBE = const(256)                 # iterations timed by size_iterations


def pbkdf2_sha256(password, salt, iterations):
    """PBKDF2-HMAC-SHA256, one 32-byte block (dkLen = 32). password, salt: bytes."""
    if iterations < 1:
        raise ValueError("iterations: must be >= 1")
    if len(password) > 64:
        password = hashlib.sha256(password).digest()
    key = bytes(password) + bytes(64 - len(password))
    ik = bytes([b ^ 0x36 for b in key])
    ok = bytes([b ^ 0x5C for b in key])
    h = hashlib.sha256(ik)
    h.update(bytes(salt) + b"\x00\x00\x00\x01")
    u = h.digest()
    h = hashlib.sha256(ok)
    h.update(u)
    u = h.digest()
    acc = int.from_bytes(u, "big")  # the XOR of the U_i, as one big int (fast on both runtimes)
    for _ in range(iterations - 1):
        h = hashlib.sha256(ik)
        h.update(u)
        u = h.digest()
        h = hashlib.sha256(ok)
        h.update(u)
        u = h.digest()
        acc ^= int.from_bytes(u, "big")
    return acc.to_bytes(32, "big")


def equal(a, b):
    """Constant-time equality of two byte strings (time depends on the length only)."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _hex(b):
    return _hexlify(b).decode()


def size_iterations(budget_ms=None):
    """Iterations this machine runs in about budget_ms (default CHECK_BUDGET_MS; timed probe),
    clamped to MIN..MAX."""
    import time

    if budget_ms is None:
        budget_ms = CHECK_BUDGET_MS

    if hasattr(time, "ticks_us"):
        t0 = time.ticks_us()
        pbkdf2_sha256(b"probe", b"probe-salt", _PROBE)
        us = time.ticks_diff(time.ticks_us(), t0)
    else:
        t0 = time.perf_counter()
        pbkdf2_sha256(b"probe", b"probe-salt", _PROBE)
        us = int((time.perf_counter() - t0) * 1000000)
    if us < 1:
        us = 1
    n = budget_ms * 1000 * _PROBE // us
    if n < MIN_ITERATIONS:
        return MIN_ITERATIONS
    if n > MAX_ITERATIONS:
        return MAX_ITERATIONS
    return n


def hash_pin(pin, iterations=None, salt=None):
    """PIN string -> stored form. salt: random unless given (tests)."""
    if iterations is None:
        iterations = size_iterations()
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    dk = pbkdf2_sha256(str(pin).encode(), salt, iterations)
    return "%s%d$%s$%s" % (PREFIX, iterations, _hex(salt), _hex(dk))


def parse(stored):
    """stored form -> (iterations, salt, key) or None if it is not one."""
    if not isinstance(stored, str) or not stored.startswith(PREFIX):
        return None
    parts = stored[len(PREFIX):].split("$")
    if len(parts) != 3:
        return None
    try:
        n = int(parts[0])
        salt = _unhexlify(parts[1])
        dk = _unhexlify(parts[2])
    except (ValueError, TypeError):
        return None
    if not MIN_ITERATIONS <= n <= MAX_ITERATIONS or len(salt) < 8 or len(dk) != 32:
        return None
    return n, salt, dk


def check_pin(pin, stored):
    """True when pin matches the stored form; False for no PIN set or a malformed value."""
    p = parse(stored)
    if p is None:
        return False
    n, salt, dk = p
    return equal(pbkdf2_sha256(str(pin).encode(), salt, n), dk)
