"""paydbox: one entry point, a table of subcommands (host tools).

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their subcommand runs, so a broken or slow one never affects another.
Errors are one line (`paydbox: error: ...`); `--debug` shows the traceback.
"""
import argparse
import importlib
import sys

# name -> (module, one-line help). Nested groups ("trace import") use a module exposing SUBCOMMANDS.
COMMANDS = {
    "trace": ("tools.trace.cli", "record, import and inspect sensor traces"),
    "replay": ("tools.trace.replay", "replay a trace through the firmware (CPython or the MicroPython VM)"),
    "simulate": ("tools.sim.cli", "simulate a drive with ground truth into a trace"),
    "evaluate": ("tools.trace.evaluate", "replay scenarios and score the box against the ground truth"),
    "bench": ("tools.bench.runner", "run every benchmark and write docs/BENCHMARKS.md"),
    "flash": ("tools.installer.flash", "compile and deploy the firmware to a box over serial"),
    "config": ("tools.installer.config_cli", "configure, self-test and provision boxes over serial"),
    "virtual-box": ("tools.installer.virtual_box",
                    "run the real firmware in the MicroPython VM behind a pty"),
    "ingest": ("tools.consumer.ingest",
               "reference MQTT consumer: store trips, positions and events in SQLite"),
    "trips": ("tools.consumer.trips", "list the trips stored by the consumer"),
    "report": ("tools.consumer.report.cli", "write an HTML/PNG report, GPX or GeoJSON of one trip"),
    "bill": ("tools.consumer.bill", "the km the stored trips bill (towed km apart), and how much is flagged"),
    "fleet-sim": ("tools.consumer.fleet_sim", "load-test the broker and consumer with N simulated boxes"),
    "export": ("tools.trace.export",
               "export a trace's records for other platforms (codec8e: Traccar / Teltonika)"),
    "demo": ("tools.demo", "the main job: a box drives a recorded trip end to end"),
    "power": ("tools.trace.power",
              "replay a parked trace with power management: states, wakes, parked current, losses"),
}


def build_parser(argv):
    p = argparse.ArgumentParser(prog="paydbox", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (modname, helptext) in COMMANDS.items():
        sp = sub.add_parser(name, help=helptext, description=helptext)
        if name == wanted:
            mod = importlib.import_module(modname)
            mod.add_arguments(sp)
            sp.set_defaults(_run=mod.run)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return args._run(args) or 0
    except KeyboardInterrupt:
        print("paydbox: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if is_user_error(e):  # bad input, a link or file fault, a subsystem's own error: one clean line
            print("paydbox: error: %s" % msg, file=sys.stderr)
            return 2
        # anything else is a bug in paydbox: say so, and how to get the traceback
        print("paydbox: internal error: %s: %s (rerun with --debug for the traceback)"
              % (type(e).__name__, msg), file=sys.stderr)
        return 70  # EX_SOFTWARE


_PROJECT = ("tools", "firmware", "hw", "edge_agent")


def is_user_error(e):
    """Errors in layers (docs/architecture.md): ValueError for bad arguments, OSError for bus, link and file
    faults, LookupError for what is not there, and each subsystem's own exception (declared in this
    project). A KeyError, IndexError, TypeError, AttributeError... is a bug, not the user's doing."""
    if isinstance(e, (KeyError, IndexError)):
        return False
    if isinstance(e, (ValueError, OSError, LookupError)):
        return True
    return any(c.__module__.split(".")[0] in _PROJECT for c in type(e).__mro__ if c is not Exception)


if __name__ == "__main__":
    sys.exit(main())
