# paydbox boot stub (written by paydbox flash): finish an interrupted install, then run the box
# from the ROMFS image (its modules first on the path).
import sys

try:
    import pdboot
    pdboot.recover()
except Exception as e:
    print("pdboot:", e)
if "/rom" in sys.path:
    sys.path.remove("/rom")
sys.path.insert(0, "/rom")
import firmware.main

firmware.main.run()
