# Helper for store tests (not a test script): a fresh empty directory on both runtimes.
# MicroPython: a littlefs2 filesystem on an emulated NOR flash (testbed/flashsim.py) mounted at a fresh
# mount point; CPython: a temporary directory.
import sys

_n = [0]
_mounted = []


def fresh_root(nblocks=48):
    """Returns (root path, flash device or None)."""
    _n[0] += 1
    if sys.implementation.name == "micropython":
        import vfs

        from testbed.flashsim import FlashSim

        while _mounted:
            try:
                vfs.umount(_mounted.pop())
            except OSError:
                pass
        import gc

        gc.collect()
        bd = FlashSim(nblocks)
        vfs.VfsLfs2.mkfs(bd)
        mp = "/fl%d" % _n[0]
        vfs.mount(vfs.VfsLfs2(bd), mp)
        _mounted.append(mp)
        return mp + "/store", bd
    import tempfile

    return tempfile.mkdtemp(prefix="paydbox_store_") + "/store", None


def remount(root, bd):
    """Simulate a reboot: unmount and mount the same flash again (MicroPython); no-op on CPython."""
    if bd is None:
        return root
    import vfs

    mp = root[: root.index("/", 1)]
    vfs.umount(mp)
    if mp in _mounted:
        _mounted.remove(mp)
    _n[0] += 1
    mp2 = "/fl%d" % _n[0]
    vfs.mount(vfs.VfsLfs2(bd), mp2)
    _mounted.append(mp2)
    return mp2 + root[len(mp):]
