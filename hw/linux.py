# Linux backends of the hardware contract (host only: a Pi-hosted box or a bench rig).
#   LinuxUART(url, baudrate)   pyserial serial_for_url -> machine.UART subset: any/read/readinto/write
#   SMBusI2C(bus_number)       smbus2 -> machine.I2C subset: readfrom_mem_into/readfrom_mem/writeto_mem
#   RawPty()                   a pty pair as a raw serial line (virtual box, simulated box)
# No GPIO pin class: ignition/supply sensing on Linux needs board-specific wiring (gpiod line numbers,
# an ADC for the supply); the app takes any object with ignition()/supply_mv().
import errno
import os


class LinuxUART:
    """machine.UART subset over pyserial. read/readinto return None when nothing is available
    (non-blocking, like machine.UART with timeout=0). Link faults raise OSError."""

    def __init__(self, url, baudrate=9600, timeout=0):
        import serial

        try:
            self._s = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, ValueError) as e:
            raise OSError(errno.ENODEV, "UART %s: %s" % (url, e))
        self.url = url
        self.baudrate = baudrate

    def any(self):
        try:
            return self._s.in_waiting
        except Exception as e:
            raise OSError(errno.EIO, "UART %s: %s" % (self.url, e))

    def read(self, n=-1):
        k = self.any()
        if n is not None and 0 <= n < k:
            k = n
        if k <= 0:
            return None
        return self._s.read(k) or None

    def readinto(self, buf, n=-1):
        k = len(buf) if n is None or n < 0 or n > len(buf) else n
        data = self.read(k)
        if not data:
            return None
        buf[: len(data)] = data
        return len(data)

    def write(self, b):
        try:
            return self._s.write(b)
        except Exception as e:
            raise OSError(errno.EIO, "UART %s: %s" % (self.url, e))

    def close(self):
        self._s.close()


class RawPty:
    """A pty pair as a plain serial line: raw mode on the slave (no echo, no line discipline), the
    master non-blocking. Give `path` (the slave) to the program on the far end; use `master` here."""

    def __init__(self):
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def close(self):
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class SMBusI2C:
    """machine.I2C subset over smbus2 (i2c_rdwr, so bursts are one transaction with a repeated start).
    A NACK / absent device raises OSError (ENODEV or EIO from the kernel)."""

    def __init__(self, bus_number):
        from smbus2 import SMBus

        try:
            self._bus = SMBus(bus_number)
        except (OSError, FileNotFoundError) as e:
            raise OSError(errno.ENODEV, "I2C bus %s: %s" % (bus_number, e))
        self.bus_number = bus_number

    def readfrom_mem_into(self, addr, memaddr, buf):
        from smbus2 import i2c_msg

        w = i2c_msg.write(addr, [memaddr & 0xFF])
        r = i2c_msg.read(addr, len(buf))
        self._bus.i2c_rdwr(w, r)
        data = bytes(r)
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom_mem(self, addr, memaddr, nbytes):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf):
        from smbus2 import i2c_msg

        self._bus.i2c_rdwr(i2c_msg.write(addr, bytes([memaddr & 0xFF]) + bytes(buf)))

    def close(self):
        self._bus.close()
