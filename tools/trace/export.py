"""paydbox export codec8e TRACE --imei IMEI -o FILE: a box's records from a trace as Teltonika
Codec 8 Extended packets, with the mapping the edge agent's Traccar output uses (edge_agent/teltonika.py).

The trace is replayed through the real firmware (CPython); its store's blocks are decoded and mapped:
one AVL record per position fix, plus events, crash, trip start/end and unplug. FILE holds what a
device sends on the TCP connection: the IMEI login, then the AVL packets (at most 1280 bytes each), so
`nc traccar-host 5027 < FILE` (or any TCP client) replays the drive into a Traccar server.
"""
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExportError(Exception):
    pass


def replay_blocks(trace, config=None):
    """(blocks in seq order [(first_seq, last_seq, prio, block)], firmware summary) of a trace."""
    if not os.path.exists(trace):
        raise ExportError("trace not found: %s" % trace)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from firmware import replay_main
    from firmware.store import Store
    from tools.trace.replay import _plain_trace

    with tempfile.TemporaryDirectory(prefix="paydbox-export-") as d:
        fs = os.path.join(d, "flash")
        os.mkdir(fs)
        summary = replay_main.run(_plain_trace(trace, d), fs, config)
        # a large enough limit that the store's whole content comes back; unacknowledged blocks
        # are all there (nothing is evicted below the store's own max_bytes)
        blocks = sorted(Store(os.path.join(fs, "store"), 1 << 30, 32768).peek(1 << 30))
    return blocks, summary


def codec8e_packets(blocks, packet_bytes=None):
    """-> (packets [bytes], AVL record count, mapper)."""
    from edge_agent import teltonika as T

    m = T.Mapper()
    avl = []
    for _fs, _ls, _prio, b in blocks:
        hdr, recs = T.records_of_block(b)
        avl += [a for _s, a in m.map_block(hdr, recs)]
    pk = [p for _i, _j, p in T.split_packets(avl, packet_bytes or T.MAX_PACKET)] if avl else []
    return pk, len(avl), m


def add_arguments(p):
    sub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    c = sub.add_parser("codec8e", help="Teltonika Codec 8 Extended (Traccar's teltonika protocol)")
    c.add_argument("trace", help="trace file (.jsonl or .jsonl.gz)")
    c.add_argument("--imei", required=True, help="the device identifier Traccar knows (its uniqueId)")
    c.add_argument("-o", "--output", required=True, help="file to write (login + AVL packets)")
    c.add_argument("--no-login", action="store_true", help="AVL packets only, without the IMEI login")
    c.add_argument("--packet-bytes", type=int, default=1280, help="largest packet (default 1280)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args):
    from edge_agent import teltonika as T

    login = b"" if args.no_login else T.login_packet(args.imei)
    if args.packet_bytes < 100:
        raise ExportError("--packet-bytes: at least 100, got %d" % args.packet_bytes)
    blocks, summary = replay_blocks(args.trace)
    packets, n, m = codec8e_packets(blocks, args.packet_bytes)
    data = login + b"".join(packets)
    tmp = args.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.output)
    out = {"output": args.output, "bytes": len(data), "packets": len(packets), "records": n,
           "fixes": summary["records"]["pos"], "odometer_m": summary["odometer_mm"] // 1000,
           "skipped_no_time": m.skipped_no_time,
           # event kinds the mapper has no Teltonika mapping for (a newer firmware's): not sent
           "skipped_kinds": dict(m.skipped_kinds)}
    if args.json:
        print(json.dumps(out))
    else:
        print("%s: %d AVL records (%d fixes) in %d packets, %d bytes; odometer %d m"
              % (args.output, n, out["fixes"], len(packets), len(data), out["odometer_m"]))
    return 0
