"""firmware/motion.py (feed loop), firmware/calib.py (calibration) and firmware/classify.py (classification)
are separate units that share the event-queue record layout. MicroPython's const() names do not cross
modules, so classify.py writes the layout again (and the slots of the settings array Motion._p it reads):
the two must agree, field by field."""
from firmware import classify, motion


def test_classify_uses_the_feed_loops_record_layout():
    names = [n for n in vars(classify) if n.startswith(("_Q_", "_K_", "_P_"))]
    assert len(names) >= 18
    for n in names:
        assert getattr(classify, n) == getattr(motion, n), n
    assert (classify._Q14, classify._QF, classify._QN) == (motion._Q14, motion._QF, motion._QN)
    # the GNSS-only fields reuse the candidate vectors' slots: a record is one or the other
    assert {classify._Q_SEEN, classify._Q_G0, classify._Q_G1} <= set(range(motion._Q_MB, motion._Q_PB))
    assert motion._QF == motion._Q_PB + 3


def test_the_box_image_carries_the_classification_unit():
    # in the image, but loaded by the first Motion, not by load_box(): a box without an accelerometer
    # (the 3-hour drive of tests/test_board_heap.py) does not carry it on its heap
    from firmware import runner
    from tools.installer import flash

    assert "firmware/classify.py" in flash.BOX_MODULES
    assert "firmware.classify" not in runner._BOX_MODULES
    import sys

    import firmware
    saved = sys.modules.pop("firmware.classify")
    del firmware.classify
    try:
        motion.Motion(100)
        assert "firmware.classify" in sys.modules   # loaded by the first Motion
    finally:
        sys.modules["firmware.classify"] = firmware.classify = saved


def test_motion_names_fit_a_73_slot_table():
    # MicroPython grows an instance's attribute table through fixed sizes (py/map.c
    # hash_allocation_sizes: ... 59, 73, 97 ...) when it is full: up to 73 names fit 73 slots (1168 B
    # on the 64-bit VM); a 74th rehashes into 97 (1552 B, both live at once, at boot). docs/heap.md.
    m = motion.Motion(100)
    assert len(vars(m)) <= 73, sorted(vars(m))


def test_the_setup_unit_is_unloaded_after_init_and_shares_the_settings_slots():
    # firmware/motion_setup.py (settings, restore: boot-only code) writes Motion._p with its own copy of
    # the slot numbers; it is in the image and gone from sys.modules once a Motion is built
    import sys

    from firmware import motion_setup
    from tools.installer import flash

    names = [n for n in vars(motion_setup) if n.startswith("_P_")]
    assert len(names) >= 20
    for n in names:
        assert getattr(motion_setup, n) == getattr(motion, n), n
    assert motion_setup._Q14 == motion._Q14
    assert "firmware/motion_setup.py" in flash.BOX_MODULES
    m = motion.Motion(100, state={"R": [16384, 0, 0, 0, 16384, 0, 0, 0, 16384], "quality": 70,
                                  "calib_state": "calibrated"})
    assert m.calib_state == "calibrated" and m.calib_quality == 70
    assert "firmware.motion_setup" not in sys.modules
