"""PS3.8 Table 9-10 (DICOM Upper Layer Protocol for TCP/IP State Transition Table), typed out again.

This is a second, independent transcription of the standard, kept in a deliberately different shape from
`agent/ul/fsm.py` (text, one line per event, one `StaN=ACTION` token per non-empty cell, no ranges, no
shared helpers) so that a slip in one is unlikely to be repeated in the other. `test_ul_fsm.py` parses it
and compares it with `agent.ul.fsm` cell by cell, and with pynetdicom's table as a third opinion.

Sources: PS3.8 9.2.3 Table 9-10 (the cells) and PS3.8 9.2.2 Tables 9-6 to 9-9 (next state of each
action). A cell that is blank in the standard is simply absent from its line.
"""

from __future__ import annotations

# Columns: Sta1 .. Sta13. Rows: Evt1 .. Evt19 (PS3.8 Table 9-10).
TABLE_9_10 = """
Evt1:  Sta1=AE-1
Evt2:  Sta4=AE-2
Evt3:  Sta2=AA-1 Sta3=AA-8 Sta5=AE-3 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt4:  Sta2=AA-1 Sta3=AA-8 Sta5=AE-4 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt5:  Sta1=AE-5
Evt6:  Sta2=AE-6 Sta3=AA-8 Sta5=AA-8 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-7
Evt7:  Sta3=AE-7
Evt8:  Sta3=AE-8
Evt9:  Sta6=DT-1 Sta8=AR-7
Evt10: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=DT-2 Sta7=AR-6 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt11: Sta6=AR-1
Evt12: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AR-2 Sta7=AR-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt13: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AA-8 Sta7=AR-3 Sta8=AA-8 Sta9=AA-8 Sta10=AR-10 Sta11=AR-3 Sta12=AA-8 Sta13=AA-6
Evt14: Sta8=AR-4 Sta9=AR-9 Sta12=AR-4
Evt15: Sta3=AA-1 Sta4=AA-2 Sta5=AA-1 Sta6=AA-1 Sta7=AA-1 Sta8=AA-1 Sta9=AA-1 Sta10=AA-1 Sta11=AA-1 Sta12=AA-1
Evt16: Sta2=AA-2 Sta3=AA-3 Sta5=AA-3 Sta6=AA-3 Sta7=AA-3 Sta8=AA-3 Sta9=AA-3 Sta10=AA-3 Sta11=AA-3 Sta12=AA-3 Sta13=AA-2
Evt17: Sta2=AA-5 Sta3=AA-4 Sta4=AA-4 Sta5=AA-4 Sta6=AA-4 Sta7=AA-4 Sta8=AA-4 Sta9=AA-4 Sta10=AA-4 Sta11=AA-4 Sta12=AA-4 Sta13=AR-5
Evt18: Sta2=AA-2 Sta13=AA-2
Evt19: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-7
"""

# Next state of each action, PS3.8 9.2.2 (Tables 9-6 AE, 9-7 DT, 9-8 AR, 9-9 AA).
# Two actions branch: "A|B" lists both outcomes in the standard's order.
#   AE-6: A-ASSOCIATE-RQ acceptable → Sta3, otherwise (A-ASSOCIATE-RJ sent) → Sta13.
#   AR-8: association-requestor → Sta9, otherwise → Sta10.
ACTION_NEXT_STATES = """
AE-1 Sta4
AE-2 Sta5
AE-3 Sta6
AE-4 Sta1
AE-5 Sta2
AE-6 Sta3|Sta13
AE-7 Sta6
AE-8 Sta13
DT-1 Sta6
DT-2 Sta6
AR-1 Sta7
AR-2 Sta8
AR-3 Sta1
AR-4 Sta13
AR-5 Sta1
AR-6 Sta7
AR-7 Sta8
AR-8 Sta9|Sta10
AR-9 Sta11
AR-10 Sta12
AA-1 Sta13
AA-2 Sta1
AA-3 Sta1
AA-4 Sta1
AA-5 Sta1
AA-6 Sta13
AA-7 Sta13
AA-8 Sta13
"""


def cells() -> dict[tuple[int, int], str]:
    """{(state number, event number): "AA-8"} for every non-empty cell of Table 9-10."""
    out: dict[tuple[int, int], str] = {}
    for line in TABLE_9_10.strip().splitlines():
        head, _, rest = line.partition(":")
        event = int(head.strip().removeprefix("Evt"))
        for token in rest.split():
            state, _, action = token.partition("=")
            key = (int(state.removeprefix("Sta")), event)
            assert key not in out, f"cell {key} typed twice"
            out[key] = action
    return out


def next_states() -> dict[str, tuple[int, ...]]:
    """{"AE-6": (3, 13), "AA-1": (13,), ...}: the possible next states of every action."""
    out: dict[str, tuple[int, ...]] = {}
    for line in ACTION_NEXT_STATES.strip().splitlines():
        action, states = line.split()
        out[action] = tuple(int(s.removeprefix("Sta")) for s in states.split("|"))
    return out
