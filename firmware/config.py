# Box configuration: the values the box runs with, power-cut-safe storage, audit hook.
#
# Storage: <path> (e.g. /config.json) holds one line of JSON (the values) then one line with the
# CRC-32 of that first line as 8 hex digits. A save writes <path>.tmp completely, then renames the
# current file to <path>.bak and the temp file to <path>. Whatever the moment of a power cut, one of
# <path>, <path>.tmp (complete and CRC-valid: the new values) or <path>.bak (the old ones) is good;
# load() takes the first good one in that order and falls back to the defaults only when none is.
#
# The schema (defaults, allowed values), validation, formatting and the file format are in
# firmware/schema.py: loaded only while a Config needs them (load at boot, `set`, the console's
# get/keys/login) and unloaded after, with firmware/pin.py (~11 KB of heap the box would otherwise
# hold for the whole drive; a module someone else had loaded stays). Runs on MicroPython and CPython.
import firmware

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(installer_pin=0)


class ConfigError(Exception):
    """Bad key or value; the message is one line naming the key and the allowed range."""


def with_schema(fn, *args):
    """firmware.schema.<fn>(*args), the schema (and the PIN module) loaded for the call only."""
    return firmware.call("schema", fn, *args)


def defaults():
    """{key: default} of every installer setting (the schema's)."""
    return with_schema("defaults")


class Config:
    """Validated configuration values. `on_change(key, old_str, new_str)` is called after each
    successful set (the app turns it into a `config` record)."""

    def __init__(self, path=None, values=None, on_change=None):
        self.path = path
        self.on_change = on_change
        self.source = "defaults"  # where load() found the values: main | tmp | backup | defaults
        self.dropped = []  # keys from the file that were unknown or invalid (kept at defaults)
        self._v = None  # key -> value, every key of the schema
        with_schema("init", self, values)

    @classmethod
    def load(cls, path, on_change=None):
        """Load from path (falls back to the complete temp file, then the backup, then defaults)."""
        return with_schema("load", cls, path, on_change)

    def save(self):
        with_schema("save", self)

    def get(self, key):
        v = self._v
        if key not in v:
            raise ConfigError("unknown key %r, known: %s" % (key, " ".join(sorted(v))))
        return v[key]

    def __getitem__(self, key):
        return self.get(key)

    def get_str(self, key):
        return with_schema("get_str", self, key)

    def scaled(self, key, scale):
        """Integer value*scale of a numeric key, e.g. scaled('crash_g', 1000) -> 2500 (mg)."""
        return int(round(self.get(key) * scale))

    def set(self, key, value_str, save=True):
        """Validate and store; returns (old_str, new_str); calls on_change if the value changed."""
        return with_schema("set_value", self, key, value_str, save)

    def pin_set(self):
        return self._v["installer_pin"] != ""

    def pin_is_legacy(self):
        return self._v["installer_pin"].startswith("sha256:")

    def check_pin(self, pin):
        """True for the box's PIN; always False while no PIN is set (there is no default PIN)."""
        return with_schema("check_pin", self, pin)

    def export(self):
        """Every key except the PIN hash, as strings (what `set` accepts)."""
        return with_schema("export", self)

    def values(self):
        return dict(self._v)
