"""The listener fed thousands of random and mutated PDUs over real TCP (hypothesis).

What a peer may observe, for every case: the agent ends the connection with an A-ABORT or an
A-ASSOCIATE-RJ, or answers a harmless mutation normally (A-ASSOCIATE-AC, A-RELEASE-RP), or — when the
bytes stop in the middle of a PDU — closes after ARTIM (Sta2) or the idle timeout (Sta6). Nothing
takes longer than the idle timeout plus slack, the agent logs no error or traceback, every connection
is accounted for, and a correct C-ECHO still succeeds after every batch.

The agent runs once for the module in its own thread (its own trio loop); each hypothesis example is a
batch of cases sent concurrently from the test thread's trio loop, so thousands of cases fit in seconds.
The "immediate" test only sends complete PDUs (the agent answers at once); the "waiting" test sends
truncated PDUs and inflated length fields, which legitimately wait for the rest until a timer expires.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.app import Agent
from agent.dimse import CEchoRQ, encode_message
from agent.net.connection import Timeouts
from agent.services.verification import VERIFICATION_SOP_CLASS, echo
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, build_request
from tests.conftest import write_profile

ARTIM = 1.0
IDLE = 2.0
SLACK = 10.0  # generous: a loaded machine is slow; a passing case ends when the agent closes
DEADLINE = IDLE + SLACK  # the longest legitimate wait (idle timeout in Sta6) plus slack
BATCH = 100

ECHO_TIMEOUTS = Timeouts(artim=30, dimse=30, idle=30, connect=30)

RQ = P.encode_pdu(
    build_request("FUZZ", "AGENT", [ProposedContext(VERIFICATION_SOP_CLASS)], max_pdu_receive=16384)
)
ECHO_COMMAND = encode_message(CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION_SOP_CLASS))
RELEASE_RQ = P.encode_pdu(P.AReleaseRQ())
TERMINAL = {P.A_ASSOCIATE_RJ, P.A_ABORT}


def pdata(context_id: int, mch: int, data: bytes) -> bytes:
    """A P-DATA-TF with one PDV; `mch` is the raw message control header byte."""
    return struct.pack(">BBI", P.P_DATA_TF, 0, len(data) + 6) + struct.pack(">IBB", len(data) + 2, context_id, mch) + data


# ---------------------------------------------------------------- the agent under test


@dataclass
class AgentThread:
    port: int
    agent: Agent
    errors: list[logging.LogRecord]


class _ErrorCollector(logging.Handler):
    """Every ERROR (or any record with a traceback) logged under `agent`, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def agent_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentThread]:
    profile = write_profile(
        tmp_path_factory.mktemp("fuzz"),
        "",
        agent_extra=f"""
        artim_timeout = "{ARTIM:g}s"
        idle_timeout = "{IDLE:g}s"
        max_associations = {2 * BATCH + 8}
        max_pending_connections = {2 * BATCH + 8}
        max_pending_per_address = {2 * BATCH + 8}
        max_pdu_length = 16384
        log_level = "debug"
        """,
    )
    collector = _ErrorCollector()
    logger = logging.getLogger("agent")
    logger.addHandler(collector)
    agent = Agent(profile)
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        state["token"] = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            state["scope"] = scope
            async with trio.open_nursery() as nursery:
                state["ports"] = await nursery.start(agent.run)
                ready.set()

    def runner() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # surfaced to the tests below
            state["crash"] = exc
            ready.set()

    thread = threading.Thread(target=runner, name="agent-under-fuzz", daemon=True)
    thread.start()
    assert ready.wait(30), "agent did not start"
    assert "crash" not in state, state.get("crash")
    try:
        yield AgentThread(state["ports"][0], agent, collector.records)  # type: ignore[index]
    finally:
        trio.from_thread.run_sync(state["scope"].cancel, trio_token=state["token"])  # type: ignore[attr-defined]
        thread.join(10)
        logger.removeHandler(collector)
    assert "crash" not in state, f"the agent's trio loop crashed: {state.get('crash')!r}"


# ---------------------------------------------------------------- talking to it


@dataclass(frozen=True)
class Case:
    kind: str
    data: bytes


@dataclass
class Outcome:
    case: Case
    pdu_types: list[int]
    eof: bool
    elapsed: float
    error: str = ""
    local: str = ""  # our address as the agent logs it ("127.0.0.1:PORT")


def split_pdus(buf: bytes) -> tuple[list[int], int]:
    """Types of the complete PDUs at the start of `buf`, and how many bytes they take."""
    types, offset = [], 0
    while len(buf) - offset >= 6:
        length = struct.unpack_from(">I", buf, offset + 2)[0]
        if len(buf) - offset - 6 < length:
            break
        types.append(buf[offset])
        offset += 6 + length
    return types, offset


async def run_case(port: int, case: Case, outcomes: list[Outcome]) -> None:
    start = trio.current_time()
    buf = b""
    types: list[int] = []
    eof = False
    error = ""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    host, local_port = stream.socket.getsockname()[:2]
    try:
        with trio.move_on_after(DEADLINE):
            data = case.data
            if case.kind.startswith("as-"):
                # Establish the association first: a requestor may not send anything after its
                # A-ASSOCIATE-RQ until the AC arrives (PS3.8 Table 9-10, Sta5).
                await stream.send_all(RQ)
                while len(buf) < 6 or len(buf) < 6 + struct.unpack_from(">I", buf, 2)[0]:
                    chunk = await stream.receive_some(65536)
                    assert chunk, "agent closed instead of answering a valid A-ASSOCIATE-RQ"
                    buf += chunk
                assert buf[0] == P.A_ASSOCIATE_AC, buf[:10].hex()
                data = data[len(RQ):]
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                pass  # the agent may abort and close before it read everything we sent
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError as exc:  # reset: the A-ABORT may have been lost
                    error = f"reset: {exc.__cause__ or exc}"
                    break
                if not chunk:
                    eof = True
                    break
                buf += chunk
                types, _ = split_pdus(buf)
                # A requestor closes the transport once it sees the end of the association
                # (PS3.8 9.2: after A-ABORT / A-ASSOCIATE-RJ / A-RELEASE-RP); we also close
                # after an AC when the case holds nothing but the (harmlessly mutated) RQ.
                if types and (
                    types[-1] in TERMINAL
                    or types[-1] == P.A_RELEASE_RP
                    or (types[-1] == P.A_ASSOCIATE_AC and case.kind.startswith("rq-"))
                ):
                    break
    finally:
        await stream.aclose()
    outcomes.append(Outcome(case, types, eof, trio.current_time() - start, error, f"{host}:{local_port}"))


def check(outcome: Outcome) -> str | None:
    """Why this outcome is wrong, or None."""
    o = outcome
    if o.error:
        # Only acceptable if the agent had already answered with a terminal PDU.
        return None if o.pdu_types and o.pdu_types[-1] in TERMINAL else f"connection reset without A-ABORT ({o.error})"
    if not o.pdu_types and not o.eof:
        return f"no answer and no close within {DEADLINE} s (hang)"
    if o.pdu_types:
        last = o.pdu_types[-1]
        if last in TERMINAL or last == P.A_RELEASE_RP:
            return None
        if last == P.A_ASSOCIATE_AC and o.case.kind.startswith("rq-") and o.pdu_types == [P.A_ASSOCIATE_AC]:
            return None  # the mutation was harmless; we closed
        if o.eof and o.elapsed >= ARTIM - 0.2:
            return None  # waited for the rest of a PDU, then gave up (ARTIM / idle)
        return f"ended after PDUs {[hex(t) for t in o.pdu_types]} (eof={o.eof}, {o.elapsed:.2f} s)"
    # EOF with nothing sent: only legitimate as ARTIM expiry while waiting for the rest (PS3.8 AA-2).
    if o.elapsed >= ARTIM - 0.2:
        return None
    return f"closed silently after {o.elapsed:.2f} s without A-ABORT"


def run_batch(at: AgentThread, cases: list[Case]) -> list[Outcome]:
    async def main() -> list[Outcome]:
        outcomes: list[Outcome] = []
        with trio.fail_after(DEADLINE + 30):
            async with trio.open_nursery() as nursery:
                for case in cases:
                    nursery.start_soon(run_case, at.port, case, outcomes)
            # The listener survived: a correct C-ECHO still works.
            result = await echo("127.0.0.1", at.port, calling_ae="CHECK", called_ae="AGENT", timeouts=ECHO_TIMEOUTS)
            assert result.ok, result
            # And it let go of every fuzzed connection (a leak would fill max_associations).
            while at.agent.listener.connections:
                await trio.sleep(0.01)
        return outcomes

    outcomes = trio.run(main)
    assert len(outcomes) == len(cases)
    return outcomes


def assert_batch(at: AgentThread, cases: list[Case]) -> None:
    outcomes = run_batch(at, cases)
    wrong = [(o.case, why) for o in outcomes if (why := check(o)) is not None]
    assert not wrong, "\n".join(f"{c.kind} {c.data[:80].hex()}…: {why}" for c, why in wrong[:10])
    by_address = {o.local: o.case for o in outcomes}

    def culprit(message: str) -> str:
        case = next((c for address, c in by_address.items() if f"@{address}:" in message), None)
        return f"  <- {case.kind} {case.data.hex()}" if case else ""

    crashes = [f"{r.name}: {r.getMessage()}{culprit(r.getMessage())}" for r in at.errors]
    at.errors.clear()
    assert not crashes, "agent logged errors/tracebacks for malformed input:\n" + "\n".join(crashes[:10])


# ---------------------------------------------------------------- strategies


def flips(data: bytes, draw, *, avoid: range = range(0)) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(out) - 1).filter(lambda i: i not in avoid))
        out[i] ^= draw(st.integers(1, 255))
    return bytes(out)


def item_length_offsets(rq: bytes) -> list[int]:
    """Offsets of the 16-bit length fields of every item and sub-item of an A-ASSOCIATE-RQ."""
    offsets = []

    def walk(start: int, end: int, nested: bool) -> None:
        i = start
        while i + 4 <= end:
            item_type = rq[i]
            length = struct.unpack_from(">H", rq, i + 2)[0]
            offsets.append(i + 2)
            if nested and item_type == 0x20:
                walk(i + 8, i + 4 + length, False)
            elif nested and item_type == 0x50:
                walk(i + 4, i + 4 + length, False)
            i += 4 + length

    walk(74, len(rq), True)
    return offsets


RQ_ITEM_LENGTHS = item_length_offsets(RQ)
PDU_LENGTH_FIELD = range(2, 6)


@st.composite
def immediate_case(draw) -> Case:
    """Complete PDUs, so the agent can answer without waiting for more bytes."""
    kind = draw(st.sampled_from([
        "random-pdu", "rq-flips", "rq-item-length", "rq-fields",
        "as-pdv-context", "as-garbage-command", "as-command-flips", "as-mch", "as-dataset-first",
        "as-pdv-length", "as-random-pdu", "as-huge-pdata", "as-second-rq",
    ]))
    if kind == "random-pdu":
        body = draw(st.binary(max_size=300))
        return Case(kind, bytes([draw(st.integers(0, 255)), draw(st.integers(0, 255))]) + struct.pack(">I", len(body)) + body)
    if kind == "rq-flips":
        return Case(kind, flips(RQ, draw, avoid=PDU_LENGTH_FIELD))
    if kind == "rq-item-length":
        out = bytearray(RQ)
        at = draw(st.sampled_from(RQ_ITEM_LENGTHS))
        struct.pack_into(">H", out, at, draw(st.integers(0, 0xFFFF)))
        return Case(kind, bytes(out))
    if kind == "rq-fields":
        # Protocol version, AE titles, application context: fixed-offset fields with random values.
        out = bytearray(RQ)
        offset = draw(st.sampled_from([6, 7, 8, 9, 10, 26, 42]))
        value = draw(st.binary(min_size=1, max_size=16))
        out[offset : offset + len(value)] = value
        return Case(kind, bytes(out[: len(RQ)]))
    # An association, then something wrong, then an A-RELEASE-RQ so a harmless case ends at once.
    if kind == "as-pdv-context":
        ctx = draw(st.integers(0, 255).filter(lambda c: c != 1))
        tail = pdata(ctx, 3, ECHO_COMMAND)
    elif kind == "as-garbage-command":
        tail = pdata(1, draw(st.sampled_from([1, 3])), draw(st.binary(max_size=200)))
    elif kind == "as-command-flips":
        tail = pdata(1, 3, flips(ECHO_COMMAND, draw))
    elif kind == "as-mch":
        tail = pdata(1, draw(st.integers(4, 255)), ECHO_COMMAND)
    elif kind == "as-dataset-first":
        tail = pdata(1, draw(st.sampled_from([0, 2])), draw(st.binary(max_size=100)))
    elif kind == "as-pdv-length":
        good = bytearray(pdata(1, 3, ECHO_COMMAND))
        struct.pack_into(">I", good, 6, draw(st.integers(0, 0xFFFFFFFF).filter(lambda n: n != len(ECHO_COMMAND) + 2)))
        tail = bytes(good)
    elif kind == "as-random-pdu":
        body = draw(st.binary(max_size=200))
        pdu_type = draw(st.integers(0, 255))
        tail = bytes([pdu_type, draw(st.integers(0, 255))]) + struct.pack(">I", len(body)) + body
    elif kind == "as-huge-pdata":
        # A P-DATA-TF header announcing more than our max PDU length (16384): refuse, do not wait.
        tail = struct.pack(">BBI", P.P_DATA_TF, 0, draw(st.integers(16385, 0xFFFFFFFF)))
    else:  # "as-second-rq": an A-ASSOCIATE-RQ inside an established association (Sta6)
        tail = RQ
    return Case(kind, RQ + tail + RELEASE_RQ)


@st.composite
def waiting_case(draw) -> Case:
    """Bytes that may stop in the middle of a PDU: the agent must give up by ARTIM or idle timeout."""
    kind = draw(st.sampled_from(["random-bytes", "rq-truncated", "rq-pdu-length", "as-truncated", "as-pdu-length"]))
    if kind == "random-bytes":
        return Case(kind, draw(st.binary(min_size=1, max_size=400)))
    if kind == "rq-truncated":
        return Case(kind, RQ[: draw(st.integers(1, len(RQ) - 1))])
    if kind == "rq-pdu-length":
        out = bytearray(RQ)
        struct.pack_into(">I", out, 2, draw(st.integers(0, 0xFFFFFFFF)))
        return Case(kind, bytes(out))
    good = pdata(1, 3, ECHO_COMMAND)
    if kind == "as-truncated":
        return Case(kind, RQ + good[: draw(st.integers(1, len(good) - 1))])
    out = bytearray(good)
    struct.pack_into(">I", out, 2, draw(st.integers(0, 0xFFFFFFFF)))
    return Case(kind, RQ + bytes(out))


# ---------------------------------------------------------------- the tests


FUZZ_SETTINGS = dict(
    deadline=None,
    # No shrinking: one batch takes about a second, and the failure message already names the
    # offending cases (kind and bytes).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(max_examples=40, **FUZZ_SETTINGS)
@given(cases=st.lists(immediate_case(), min_size=BATCH, max_size=BATCH))
def test_listener_survives_malformed_complete_pdus(agent_thread: AgentThread, cases: list[Case]) -> None:
    assert_batch(agent_thread, cases)


@settings(max_examples=4, **FUZZ_SETTINGS)
@given(cases=st.lists(waiting_case(), min_size=BATCH, max_size=BATCH))
def test_listener_gives_up_on_partial_pdus_in_time(agent_thread: AgentThread, cases: list[Case]) -> None:
    assert_batch(agent_thread, cases)


def test_echo_command_with_bad_context_is_aborted(agent_thread: AgentThread) -> None:
    """A fixed example of the fuzzed property: PDV on a context that was never accepted -> A-ABORT."""
    [outcome] = run_batch(agent_thread, [Case("as-pdv-context", RQ + pdata(7, 3, ECHO_COMMAND))])
    assert outcome.pdu_types == [P.A_ASSOCIATE_AC, P.A_ABORT]


# ---------------------------------------------------------------- cases the fuzzer found (fixed)


def test_two_release_requests_in_one_read_are_not_a_crash(agent_thread: AgentThread) -> None:
    """A-RELEASE-RQ twice in one segment: the second one is invalid in Sta8 (AA-8, A-ABORT).

    The peer sees a correct A-ABORT, but the agent then pops the first ReleaseRequested from the
    connection's queue and calls `answer_release()` in Sta13, which raises ProtocolError, logged by
    `Listener.handle_stream` as "association failed" with a traceback (the handler-bug path).
    """
    [outcome] = run_batch(agent_thread, [Case("as-double-release", RQ + RELEASE_RQ + RELEASE_RQ)])
    assert outcome.pdu_types[-1] == P.A_ABORT
    errors = [r.getMessage() for r in agent_thread.errors]
    agent_thread.errors.clear()
    assert errors == []


def test_pdata_pipelined_behind_the_request_is_not_a_crash(agent_thread: AgentThread) -> None:
    """A requestor that sends P-DATA-TF right behind its A-ASSOCIATE-RQ, without waiting for the AC.

    Evt10 in Sta3 is AA-8: the agent rightly answers A-ABORT. But `_negotiate` then accepts (or
    rejects) in Sta13, which raises ProtocolError, logged as "association failed" with a traceback.
    """
    [outcome] = run_batch(agent_thread, [Case("rq-pipelined", RQ + pdata(1, 3, ECHO_COMMAND))])
    assert outcome.pdu_types == [P.A_ABORT]
    errors = [r.getMessage() for r in agent_thread.errors]
    agent_thread.errors.clear()
    assert errors == []


def _echo_with_bad_class_uid(data_set_type: int) -> bytes:
    from agent.dimse import Tag, encode_command_set

    return encode_command_set({
        Tag.CommandField: 0x0030, Tag.MessageID: 1, Tag.CommandDataSetType: data_set_type,
        Tag.AffectedSOPClassUID: "1.2.840.10008.1\x00.1",
    })


def test_unusable_request_is_answered_then_released(agent_thread: AgentThread) -> None:
    """A C-ECHO-RQ whose class UID holds a NUL is answered (0122), and the release still works."""
    case = Case("as-unusable", RQ + pdata(1, 3, _echo_with_bad_class_uid(0x0101)) + RELEASE_RQ)
    [outcome] = run_batch(agent_thread, [case])
    assert outcome.pdu_types == [P.A_ASSOCIATE_AC, P.P_DATA_TF, P.A_RELEASE_RP]
    assert agent_thread.errors == []


def test_release_while_a_refused_data_set_is_awaited_is_aborted_not_dropped(agent_thread: AgentThread) -> None:
    """Found by the fuzzer: an unusable request announcing a data set, then A-RELEASE-RQ instead of
    the data set. The agent used to close the connection without a word; it sends A-ABORT."""
    case = Case("as-unusable-release", RQ + pdata(1, 3, _echo_with_bad_class_uid(0x0001)) + RELEASE_RQ)
    [outcome] = run_batch(agent_thread, [case])
    assert outcome.pdu_types == [P.A_ASSOCIATE_AC, P.A_ABORT]
    assert agent_thread.errors == []
