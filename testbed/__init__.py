# Test doubles and simulated peers for the tests and benchmarks; never shipped to a box or an agent
# (tests/test_layering.py: firmware/, hw/, edge_agent/ and the CLI never import this package).
#   flashsim.py  emulated NOR flash block device with a power-cut injector (littlefs in the VM)
#   blockdev.py  RAM block device (block device protocol, extended form)
#   blocks.py    records into codec blocks as the box fills them
#   byteuart.py  a UART as two byte queues (board simulation, console tests)
#   simbox.py    a simulated box (the real firmware BoxLink over a pty), agent process, MQTT collector
