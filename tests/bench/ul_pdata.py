"""Per-PDU cost of receiving P-DATA-TF in the sans-IO association, in process, beside pynetdicom's decode.

    .venv/bin/python -m tests.bench.ul_pdata [-n 20000] [--max-pdu 16384] [--runs 5]   (as a module:
    tests/bench/queue.py would shadow the standard library queue module that pynetdicom imports)

DCMTK storescu sends 16 KB PDUs (its default maximum), about 32 for each 0.5 MB CT image, so this path
runs some 6,400 times for the 200-image receive of tests/bench/storage.py. Rows (best of `--runs`, in
microseconds per PDU, one P-DATA-TF of one data-set PDV per call):
- agent receive_data: `Association.receive_data(pdu_bytes)` in Sta6 as the connection calls it: copy
  into the reader, split, decode, and the Sta6 P-DATA-TF shortcut (DT-2's DataReceived);
- agent table path: the same bytes through the reader and `Association._peer_pdu`, the generic path
  (PS3.8 Table 9-10 look-up and `_perform`) every other PDU takes: what the shortcut saves;
- agent decode_pdu: the decoder alone;
- pynetdicom P_DATA_TF().decode: pynetdicom's decoder alone (it copies each PDV's value; the agent's
  PDVs are views of the PDU). Its state machine runs in a thread behind queues and is not comparable.
Not part of the test suite; no assertion on time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from agent.ul import pdu as P
from agent.ul.association import Association, DataReceived, Role
from agent.ul.fsm import State


def _acceptor() -> Association:
    assoc = Association(Role.ACCEPTOR)
    assoc.state = State.STA6  # as after AE-7; the negotiation is not what is measured
    return assoc


def _time(n: int, runs: int, body: Callable[[], Callable[[], object]]) -> float:
    best = float("inf")
    for _ in range(runs):
        step = body()
        start = time.perf_counter()
        for _ in range(n):
            step()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="PDUs per run")
    parser.add_argument("--max-pdu", type=int, default=16384, help="PDU length field (storescu: 16384)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    raw = P.encode_pdu(P.PDataTF((P.PDV(1, False, False, bytes(args.max_pdu - 6)),)))

    def receive() -> Callable[[], object]:
        assoc = _acceptor()

        def step() -> object:
            (ind,) = assoc.receive_data(raw)
            return ind

        assert isinstance(assoc.receive_data(raw)[0], DataReceived)
        return step

    def table() -> Callable[[], object]:
        assoc = _acceptor()

        def step() -> object:
            assoc.reader.feed(raw)
            (ind,) = assoc._peer_pdu(assoc.reader.next_pdu())  # type: ignore[arg-type]
            assoc.reader.next_pdu()  # as receive_data's loop asks once more
            return ind

        return step

    rows: list[tuple[str, float]] = [
        ("agent receive_data (Sta6 shortcut)", _time(args.n, args.runs, receive)),
        ("agent table path (reader + _peer_pdu)", _time(args.n, args.runs, table)),
        ("agent decode_pdu", _time(args.n, args.runs, lambda: lambda: P.decode_pdu(raw))),
    ]
    try:
        from pynetdicom.pdu import P_DATA_TF
    except ImportError:
        print("pynetdicom not installed: its row is skipped")
    else:
        decode = _time(args.n, args.runs, lambda: lambda: P_DATA_TF().decode(raw))
        rows.append(("pynetdicom P_DATA_TF().decode", decode))
    base = rows[0][1]
    print(f"P-DATA-TF of {len(raw)} bytes, one PDV; best of {args.runs} runs of {args.n} PDUs")
    for name, us in rows:
        print(f"  {name:<40} {us:6.2f} us/PDU   {us / base:5.2f}x agent receive_data")


if __name__ == "__main__":
    main()
