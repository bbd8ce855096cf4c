# paydbox hardware abstraction: a subset of MicroPython's `machine` API.
