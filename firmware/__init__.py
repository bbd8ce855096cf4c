# paydbox box firmware (MicroPython; also runs on CPython).
VERSION = "0.1.0"
