# Test double of MicroPython's `machine` module for running firmware/main.py in the unix VM (the
# real module exists only on boards). Byte level: UARTs are byte queues, the I2C bus is hw/replay.py's
# register-level LIS3DH model, pins and the ADC hold values the test sets. Records what was built.
from hw.compat import VirtualClock
from hw.replay import LIS3DHModel
from testbed.byteuart import ByteUart

built = []  # (kind, id, kwargs) of every object the entry point built
clock = VirtualClock(0)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
cause = [PWRON_RESET]
resets = [0]


def reset_cause():
    return cause[0]


def reset():
    resets[0] += 1


class Pin:
    IN = 1
    OUT = 2
    values = {}

    def __init__(self, n, mode=None, value=None):
        self.n = n
        built.append(("Pin", n, mode))
        if value is not None:
            Pin.values[n] = value

    def value(self, v=None):
        if v is None:
            return Pin.values.get(self.n, 1)
        Pin.values[self.n] = v
        return None


sleeps = []  # ms of every lightsleep() call


def lightsleep(ms):
    sleeps.append(ms)
    clock.now += ms


class ADC:
    uv = 2210000  # 12.6 V through the 5.7 divider

    def __init__(self, pin):
        built.append(("ADC", pin.n, None))

    def read_uv(self):
        return ADC.uv


class UART(ByteUart):
    def __init__(self, n, baudrate=9600, tx=None, rx=None, rxbuf=256):
        ByteUart.__init__(self)
        self.n = n
        self.baudrate = baudrate
        built.append(("UART", n, {"baudrate": baudrate, "tx": tx, "rx": rx, "rxbuf": rxbuf}))

    def init(self, baudrate=None, **kw):
        if baudrate is not None:
            self.baudrate = baudrate
            built.append(("UART.init", self.n, {"baudrate": baudrate}))


class I2C:
    def __init__(self, n, scl=None, sda=None, freq=400000):
        built.append(("I2C", n, {"scl": scl.n, "sda": sda.n, "freq": freq}))
        self.model = LIS3DHModel(clock)

    def readfrom_mem_into(self, addr, memaddr, buf):
        return self.model.readfrom_mem_into(addr, memaddr, buf)

    def writeto_mem(self, addr, memaddr, buf):
        return self.model.writeto_mem(addr, memaddr, buf)


class WDT:
    feeds = 0

    def __init__(self, timeout=0):
        built.append(("WDT", 0, {"timeout": timeout}))

    def feed(self):
        WDT.feeds += 1
