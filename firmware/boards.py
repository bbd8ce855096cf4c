# Supported boards: pins, UARTs, heap left to MicroPython and flash layout. One table, used by the
# board entry point (firmware/main.py: which pins to build the machine objects on) and by the host
# (`paydbox flash --board`: mpy-cross arch, expected sys.platform, ROMFS or file copy).
#
# heap_bytes: GC heap MicroPython has on that board with the stock build (ESP32 without PSRAM ~110 KB
# after WiFi/BT are left off; RP2040 ~190 KB; ESP32-S3 with 8 MB PSRAM: the PSRAM).
# romfs_bytes: size of the ROMFS partition of the flash layout the base image must carry (0: none,
# the firmware is copied as .mpy files into the littlefs filesystem and its bytecode loads into RAM).
# Pins are GPIO numbers; wiring in docs/installer.md. Power management (docs/power.md): accel_int1 the
# LIS3DH's INT1 (an RTC-capable input on ESP32: it wakes the MCU), agent_en the enable of the edge
# agent's 5 V supply, gnss_en the GNSS receiver's main supply (its backup supply stays on); a profile
# without agent_en never sleeps. fs_root: where the VFS (littlefs) is mounted
# relative to the working directory ("" = "/", where MicroPython mounts it on ESP32 and RP2).

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(romfs_bytes=0, supply_divider_x1000=0)

BOARDS = {
    "esp32-wroom": {
        "desc": "ESP32-WROOM-32 (4 MB flash, no PSRAM)",
        "platform": "esp32", "arch": "xtensawin", "heap_bytes": 110 * 1024,
        "flash": {"size": 4 * 1024 * 1024, "app": 0x1F0000, "romfs_bytes": 256 * 1024, "vfs": "littlefs2"},
        "gnss_uart": 1, "gnss_tx": 17, "gnss_rx": 16, "gnss_rxbuf": 2048,
        "i2c": 0, "scl": 22, "sda": 21, "i2c_freq": 400000,
        "link_uart": 2, "link_tx": 25, "link_rx": 26, "link_rxbuf": 4096,
        "ign_pin": 34, "supply_adc": 35, "supply_divider_x1000": 5700,
        "accel_int1": 39, "agent_en": 27, "gnss_en": 14,
        "wdt_ms": 8000, "fs_root": "",
    },
    "esp32-s3": {
        "desc": "ESP32-S3-WROOM-1 (8 MB flash, 8 MB PSRAM)",
        "platform": "esp32", "arch": "xtensawin", "heap_bytes": 8 * 1024 * 1024,
        "flash": {"size": 8 * 1024 * 1024, "app": 0x200000, "romfs_bytes": 1024 * 1024, "vfs": "littlefs2"},
        "gnss_uart": 1, "gnss_tx": 17, "gnss_rx": 18, "gnss_rxbuf": 4096,
        "i2c": 0, "scl": 9, "sda": 8, "i2c_freq": 400000,
        "link_uart": 2, "link_tx": 4, "link_rx": 5, "link_rxbuf": 8192,
        "ign_pin": 6, "supply_adc": 7, "supply_divider_x1000": 5700,
        "accel_int1": 12, "agent_en": 10, "gnss_en": 11,
        "wdt_ms": 8000, "fs_root": "",
    },
    "pico-w": {
        "desc": "Raspberry Pi Pico W (RP2040, 2 MB flash)",
        "platform": "rp2", "arch": "armv6m", "heap_bytes": 190 * 1024,
        "flash": {"size": 2 * 1024 * 1024, "app": 0x100000, "romfs_bytes": 0, "vfs": "littlefs2"},
        "gnss_uart": 0, "gnss_tx": 0, "gnss_rx": 1, "gnss_rxbuf": 2048,
        "i2c": 1, "scl": 3, "sda": 2, "i2c_freq": 400000,
        "link_uart": 1, "link_tx": 4, "link_rx": 5, "link_rxbuf": 4096,
        "ign_pin": 22, "supply_adc": 26, "supply_divider_x1000": 5700,
        "accel_int1": 18, "agent_en": 16, "gnss_en": 17,
        "wdt_ms": 8000, "fs_root": "",
    },
    # the MicroPython unix VM behind `paydbox virtual-box` (no pins: the harness builds the board)
    "unix": {
        "desc": "virtual box (MicroPython unix VM)",
        "platform": "linux", "arch": "x64", "heap_bytes": 96 * 1024,
        "flash": {"size": 0, "app": 0, "romfs_bytes": 1024 * 1024, "vfs": "posix"},
        "wdt_ms": 0, "fs_root": "",
    },
}

# the profile a board built without /board.json uses
DEFAULT = "esp32-wroom"


def profile(name):
    """The profile of board `name`; ValueError naming the known boards."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError("board: %r unknown, known: %s" % (name, " ".join(sorted(BOARDS))))
