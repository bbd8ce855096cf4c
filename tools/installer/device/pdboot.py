# paydbox install journal: finish an interrupted firmware switch-over (written by paydbox flash).
import os

JOURNAL = "paydbox.journal"
MANIFEST = "paydbox.json"


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _rename(a, b):
    try:
        os.rename(a, b)
    except OSError:
        try:
            os.remove(b)
        except OSError:
            pass
        os.rename(a, b)


def recover():
    """Replay the journal if an install was interrupted after its commit; returns 1 if it did."""
    if not _exists(JOURNAL):
        return 0
    import json
    try:
        with open(JOURNAL) as f:
            j = json.load(f)
    except (OSError, ValueError):
        os.remove(JOURNAL)  # torn journal: never committed (the commit is its rename)
        return 0
    for dst in j["renames"]:
        if _exists(dst + ".new"):
            _rename(dst + ".new", dst)
    with open(MANIFEST + ".tmp", "w") as f:
        f.write(j["manifest"])
    _rename(MANIFEST + ".tmp", MANIFEST)
    for p in j.get("delete", ()):
        try:
            os.remove(p)
        except OSError:
            pass
    os.remove(JOURNAL)
    return 1
