# paydbox boot stub (written by paydbox flash): finish an interrupted install, then run the box.
try:
    import pdboot
    pdboot.recover()
except Exception as e:
    print("pdboot:", e)
import firmware.main

firmware.main.run()
