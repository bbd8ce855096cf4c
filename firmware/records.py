# The record definitions of the block format (docs/record-format.md): record types, their fields and
# kinds, the string table, optional fields (the versions a decoder reads: firmware/decoder.py). Data only:
# firmware/codec.py codes them, firmware/rangecoder.py is the generic coder under it. Append only: an
# index is the format.
#
# Compact on purpose (the box's heap): flat tables of names, not a tuple per field (a table of
# (name, kind) pairs was 7.4 KB of heap).
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(n_gnss_only=0, n_unclassified=0)

VERSION = const(5)  # the version this encoder writes; FORMATS says what each version a decoder reads holds

# Record types: the code is the index. Every record has type, seq, t_ms, utc_s (coded apart); then the
# fields of its type in this order: FIELDS[FIRST[code]:FIRST[code + 1]].
TYPE_NAMES = ("pos", "event", "crash", "trip_start", "trip_end", "status", "tamper", "config", "odometer")
FIELDS = (
    # 0 pos
    "lat_e7", "lon_e7", "speed_mmps", "course_cdeg", "hdop_x10", "sats",
    # 1 event
    "kind", "dur_ms", "peak_mg", "mean_mg", "speed_start_mmps", "speed_end_mmps", "lat_e7", "lon_e7",
    "course_cdeg",
    # 2 crash
    "peak_mg", "lat_e7", "lon_e7", "speed_mmps", "rate_hz", "pre_ms", "samples",
    # 3 trip_start
    "trip", "lat_e7", "lon_e7",
    # 4 trip_end
    "trip", "start_t_ms", "end_t_ms", "start_utc_s", "end_utc_s", "start_lat_e7", "start_lon_e7",
    "end_lat_e7", "end_lon_e7", "distance_m", "bridged_m", "duration_s", "max_speed_mmps", "n_harsh_accel",
    "n_harsh_brake", "n_harsh_corner_left", "n_harsh_corner_right", "n_crash", "n_overspeed", "idle_s",
    "night_s", "overspeed_s", "score", "n_unclassified", "n_gnss_only", "score_note",
    # 5 status
    "fw", "boot", "store_used", "store_evicted", "gnss_ok", "accel_ok", "odometer_m", "calib",
    "calib_quality", "supply_mv",
    # 6 tamper
    "reason", "value",
    # 7 config
    "key", "old", "new",
    # 8 odometer
    "total_m",
)
# The kind of each field of FIELDS, one letter each: i int, c course in cdeg (-1..35999, wrapped),
# a latitude e7, o longitude e7, s string, b bytes.
KINDS = (b"aoicii"  # pos
         b"siiiiiaoc"  # event
         b"iaoiiib"  # crash
         b"iao"  # trip_start
         b"iiiiiaoaoiiiiiiiiiiiiiiiis"  # trip_end
         b"siiiiiisii"  # status
         b"si"  # tamper
         b"sss"  # config
         b"i")  # odometer

# Strings coded as a table index (common values), else inline.
STRINGS = ("harsh_accel", "harsh_brake", "harsh_corner_left", "harsh_corner_right", "overspeed", "idle",
           "towing", "unclassified", "power_loss", "unaccounted_distance", "accel_missing", "gnss_missing",
           "uncalibrated", "calibrating", "calibrated", "crash", "", "partial_unclassified", "gnss_only",
           "partial_unclassified+gnss_only", "harsh_accel_gnss", "harsh_brake_gnss",
           "tow", "geofence_exit", "cutoff", "cutoff_end", "supply_invalid", "supply_restored",
           "ignition_stuck", "ignition_ok")
# Optional fields (by name, unique to their record type): absent on encode = this default; a
# decoded record carries them only when they differ from it (so records round-trip either way).
OPTIONAL = {"n_unclassified": 0, "n_gnss_only": 0, "score_note": "", "supply_mv": -1}

# Fields per record type (type order) in the version this encoder writes, VERSION: how FIELDS splits into
# types (FIRST). The versions a decoder reads, older ones included, are firmware/decoder.py FORMATS (host
# side: the box only writes VERSION). A bytes constant (it stays in the image): 6, 9, 7, 3, 26, 10, 2, 3, 1.
COUNTS = b"\x06\x09\x07\x03\x1a\x0a\x02\x03\x01"
# FIRST[code]: index in FIELDS of the first field of type code; FIRST[len(TYPE_NAMES)] = len(FIELDS)
FIRST = bytearray(len(TYPE_NAMES) + 1)
for _i in range(len(TYPE_NAMES)):
    FIRST[_i + 1] = FIRST[_i] + COUNTS[_i]
del _i
if FIRST[len(TYPE_NAMES)] != len(FIELDS) or len(KINDS) != len(FIELDS):
    raise ImportError("records: COUNTS names %d fields, FIELDS has %d and KINDS %d"
                      % (FIRST[len(TYPE_NAMES)], len(FIELDS), len(KINDS)))


def fields(tname):
    """((name, kind letter), ...) of record type tname, in coding order (for host tools and tests)."""
    c = TYPE_NAMES.index(tname)
    return tuple((FIELDS[i], chr(KINDS[i])) for i in range(FIRST[c], FIRST[c + 1]))
