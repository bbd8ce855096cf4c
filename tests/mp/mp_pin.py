# PBKDF2-HMAC-SHA256 PIN storage (firmware/pin.py) under MicroPython and CPython. Expected keys are
# RFC 7914 section 11's PBKDF2-HMAC-SHA256 vectors (first 32 bytes) and values from CPython's
# hashlib.pbkdf2_hmac (an independent implementation), never from this code.
import binascii

from firmware import pin
from mptest import assert_eq, assert_raises


def _h(b):
    return binascii.hexlify(b).decode()


def test_rfc7914_vectors():
    assert_eq(_h(pin.pbkdf2_sha256(b"passwd", b"salt", 1)),
              "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc", "passwd/salt c=1")
    assert_eq(_h(pin.pbkdf2_sha256(b"Password", b"NaCl", 80000)),
              "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56", "Password/NaCl c=80000")


def test_hashlib_pbkdf2_values():
    # hashlib.pbkdf2_hmac("sha256", b"482913", bytes(range(16)), 1000) and a > 64-byte password
    assert_eq(_h(pin.pbkdf2_sha256(b"482913", bytes(range(16)), 1000)),
              "c244b3eb4f25507ed8b8ad789e97c7d8a4cfa28fc257cbd6fe1612f7fcb694a2", "pin")
    assert_eq(_h(pin.pbkdf2_sha256(b"x" * 70, b"salt", 2)),
              "ef06b903da29fd9f8d7e9efc69e619eabc5af88dfa032962110aa355fe5caa61", "long password")
    assert_raises(ValueError, pin.pbkdf2_sha256, b"a", b"b", 0)


def test_stored_form_salted_and_checked():
    a = pin.hash_pin("482913", iterations=2000)
    b = pin.hash_pin("482913", iterations=2000)
    assert a != b, "same PIN, same hash: no per-box salt"
    assert a.startswith("pbkdf2-sha256$2000$") and "482913" not in a
    n, salt, dk = pin.parse(a)
    assert_eq((n, len(salt), len(dk)), (2000, 16, 32), "parts")
    assert pin.check_pin("482913", a)
    assert not pin.check_pin("482914", a)
    assert not pin.check_pin("", a)
    assert not pin.check_pin("0000", "")  # no PIN set: nothing matches
    for bad in ("pbkdf2-sha256$10$00$00", "pbkdf2-sha256$x$y$z", "sha256:ab:cd",
                "pbkdf2-sha256$2000$" + "00" * 16):
        assert not pin.check_pin("482913", bad), bad
    fixed = pin.hash_pin("482913", iterations=1000, salt=bytes(range(16)))
    assert fixed.endswith("$c244b3eb4f25507ed8b8ad789e97c7d8a4cfa28fc257cbd6fe1612f7fcb694a2"), fixed


def test_constant_time_equal():
    assert pin.equal(b"abc", b"abc")
    assert not pin.equal(b"abc", b"abd")
    assert not pin.equal(b"abc", b"ab")
    assert not pin.equal(b"", b"a")


def test_sized_iterations_in_range():
    n = pin.size_iterations()
    assert pin.MIN_ITERATIONS <= n <= pin.MAX_ITERATIONS, n
