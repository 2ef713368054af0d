"""A sans-IO link layer modelled on ASTM E1381 / CLSI LIS01-A2 (low-level protocol).

Bytes in, events out; an outbound buffer; time is an input (`now`, seconds, any monotonic origin).
No trio, no serial port, no clock in this module: `drivers/acquisition/serial/driver.py` (the agent,
receiving) and `device.py` (the simulator, sending) run it.

Invariants:
- A message is delivered (`MessageReceived`) only once all its frames arrived intact and in order;
  a message interrupted by EOT, by the 30 s receive timer, or by a new ENQ (the sender restarted) is
  dropped whole (`MessageDiscarded`): nothing half is ever handed up.
- The receiver delays the ACK of a message's last frame until `accept()` (the consumer recorded it)
  or answers it with NAK on `reject()` (the consumer could not parse it).
- The sender keeps a message until its last frame is ACKed (`MessageSent`); an abort (6 refusals of one
  frame, the 15 s reply timer, contention) leaves it queued and it is sent again from its first frame.
- One session carries one message: ENQ, frames, EOT (the receiver accepts several, frame numbers
  continuing, as the standard allows).

Rules followed (section numbers of ASTM E1381-02 / LIS01-A2):
- 6.2 establishment: the sender sends ENQ; the receiver answers ACK (ready) or NAK (busy: the sender
  waits 10 s before a new ENQ). Contention (6.2.7): both sides sent ENQ; the instrument (`priority`)
  waits 1 s and sends ENQ again, the computer system yields, receives, and waits 20 s before its own
  next ENQ.
- 6.3 transfer: `STX FN text ETB|ETX C1 C2 CR LF`; FN = frame number modulo 8, the first frame of a
  session is 1; C1 C2 = the sum of the bytes from FN through ETB/ETX modulo 256, two upper-case hex
  digits; at most 240 text characters per frame (247 with the 7 framing characters), so a longer message
  goes in intermediate (ETB) frames and one end (ETX) frame. Restricted characters (6.6.2: SOH STX ETX
  EOT ENQ ACK DLE NAK SYN ETB LF DC1-DC4) never appear in the text; CR does (record separator).
- 6.3.4/6.3.5: the receiver ACKs a good frame, NAKs a bad one (checksum, structure, frame number,
  restricted character); a frame equal to the last accepted one (its ACK was lost) is ACKed and dropped.
  The sender retransmits a NAKed frame; once one frame was sent and refused six times it aborts (EOT).
  An EOT in reply to a frame (receiver interrupt, 6.3.6) is taken as ACK; we keep sending.
- 6.5 timers: sender 15 s for a reply to ENQ or to a frame (then EOT, termination); receiver 30 s
  for a frame or EOT after ACK/NAK (then the line is neutral and the partial message discarded).
Extension (documented in PROTOCOL.md): an ENQ while receiving (between frames or inside one: it is
a restricted character) means the sender restarted; the partial message is discarded and the new session accepted at once (no 30 s wait).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum, auto

SOH, STX, ETX, EOT, ENQ, ACK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
LF, CR, DLE, NAK, SYN, ETB = 0x0A, 0x0D, 0x10, 0x15, 0x16, 0x17
DC1, DC2, DC3, DC4 = 0x11, 0x12, 0x13, 0x14
RESTRICTED = frozenset({SOH, STX, ETX, EOT, ENQ, ACK, DLE, NAK, SYN, ETB, LF, DC1, DC2, DC3, DC4})

MAX_TEXT = 240  # characters of text per frame (6.3.1.2)
MAX_FRAME = MAX_TEXT + 7  # STX FN ... ETB C1 C2 CR LF
MAX_REFUSALS = 6  # a frame sent and refused six times aborts the message (6.3.5.2)
SENDER_TIMEOUT = 15.0  # 6.5.2.1
RECEIVER_TIMEOUT = 30.0  # 6.5.2.2
BUSY_DELAY = 10.0  # after a NAK to ENQ (6.2.6)
CONTENTION_DELAY_INSTRUMENT = 1.0  # 6.2.7.1
CONTENTION_DELAY_COMPUTER = 20.0  # 6.2.7.2
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024


class LinkError(ValueError):
    """A message the sender cannot frame (restricted character in its text)."""


def checksum(body: bytes) -> bytes:
    """C1 C2 for `body` = FN ... ETB|ETX: the byte sum modulo 256 as two upper-case hex digits."""
    return b"%02X" % (sum(body) & 0xFF)


def encode_frame(number: int, text: bytes, final: bool) -> bytes:
    """One frame: STX FN text ETB|ETX C1 C2 CR LF with FN = `number` modulo 8."""
    if len(text) > MAX_TEXT:
        raise LinkError(f"frame text of {len(text)} characters (at most {MAX_TEXT})")
    bad = RESTRICTED.intersection(text)
    if bad:
        raise LinkError(f"restricted character 0x{min(bad):02X} in frame text")
    body = b"%d" % (number % 8) + text + bytes([ETX if final else ETB])
    return bytes([STX]) + body + checksum(body) + b"\r\n"


def split_message(text: bytes, max_text: int = MAX_TEXT) -> list[bytes]:
    """The frame texts of a message: full intermediate frames, then the end frame (maybe empty)."""
    bad = RESTRICTED.intersection(text)
    if bad:
        raise LinkError(f"restricted character 0x{min(bad):02X} in message text")
    if not 1 <= max_text <= MAX_TEXT:
        raise LinkError(f"frame text size {max_text} (1..{MAX_TEXT})")
    return [text[i : i + max_text] for i in range(0, len(text), max_text)] or [b""]


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A whole message; the ACK of its last frame waits for `Link.accept()` / `Link.reject()`."""

    text: bytes


@dataclass(frozen=True, slots=True)
class MessageDiscarded:
    """A partial message dropped (EOT, 30 s timer, sender restarted, too long)."""

    reason: str
    received: int  # bytes of text that had arrived


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A frame answered with NAK (informational: the sender will retransmit it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class FrameRefused:
    """Sender: the receiver answered frame `number` with NAK, `count` times so far (informational)."""

    number: int
    count: int


@dataclass(frozen=True, slots=True)
class MessageSent:
    """The receiver ACKed the last frame of the message queued with `tag`."""

    tag: object


@dataclass(frozen=True, slots=True)
class SendAborted:
    """The session ended before the message was acknowledged; it stays queued and is sent again."""

    tag: object
    reason: str


LinkEvent = MessageReceived | MessageDiscarded | FrameRejected | FrameRefused | MessageSent | SendAborted


class State(Enum):
    NEUTRAL = auto()
    AWAIT_ENQ_REPLY = auto()  # sender: ENQ sent
    AWAIT_FRAME_REPLY = auto()  # sender: frame sent
    WAIT_BEFORE_ENQ = auto()  # sender: busy / contention / retry pause before the next ENQ
    RECEIVING = auto()  # receiver: between or inside frames
    HOLDING = auto()  # receiver: last frame of a message in, its ACK waits for the consumer


@dataclass
class _Outgoing:
    tag: object
    frames: list[bytes]  # frame texts


class Link:
    """One end of the link. `priority=True` for the instrument (the device), False for the computer
    system (the agent): it decides contention. The `retry_delay` after an aborted send is not set by
    the standard; the sender waits that long before its next ENQ."""

    def __init__(
        self,
        *,
        priority: bool,
        sender_timeout: float = SENDER_TIMEOUT,
        receiver_timeout: float = RECEIVER_TIMEOUT,
        retry_delay: float = BUSY_DELAY,
        max_text: int = MAX_TEXT,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.priority = priority
        self.sender_timeout = sender_timeout
        self.receiver_timeout = receiver_timeout
        self.retry_delay = retry_delay
        self.max_text = max_text
        self.max_message = max_message
        self.state = State.NEUTRAL
        self._out = bytearray()
        self._queue: deque[_Outgoing] = deque()
        self._deadline: float | None = None
        self._not_before = 0.0  # the sender's next ENQ, not earlier
        # sender
        self._index = 0  # frame index in the current message
        self._number = 1  # frame number of the frame in flight
        self._refusals = 0
        # receiver
        self._frame: bytearray | None = None  # inside a frame (from STX)
        self._overlong = False
        self._expected = 1
        self._last_accepted: int | None = None
        self._text = bytearray()
        self._held: bytes | None = None  # text of the final frame whose ACK is held

    # ------------------------------------------------------------ inputs

    def send_message(self, text: bytes, tag: object, now: float) -> list[LinkEvent]:
        """Queue a message; framing errors (restricted characters) raise LinkError at once."""
        self._queue.append(_Outgoing(tag, split_message(text, self.max_text)))
        return self.tick(now)

    def receive_data(self, data: bytes, now: float) -> list[LinkEvent]:
        """Feed bytes read from the line. A sender acts on the first reply in `data` only: any other reply
        byte read with it was sent before our answer to the first one, so it cannot be a reply to that
        (replies carry no frame number; this keeps a stray NAK from shifting every later ACK by one)."""
        events: list[LinkEvent] = []
        replied = False
        for byte in data:
            if byte in (ACK, NAK) and self.state in (State.AWAIT_ENQ_REPLY, State.AWAIT_FRAME_REPLY):
                if replied:
                    continue
                replied = True
            self._receive_byte(byte, now, events)
        events.extend(self.tick(now))
        return events

    def tick(self, now: float) -> list[LinkEvent]:
        """Timers: call when `next_deadline()` has passed (extra calls are harmless)."""
        events: list[LinkEvent] = []
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            if self.state in (State.AWAIT_ENQ_REPLY, State.AWAIT_FRAME_REPLY):
                self._abort("no reply within the sender's timer", now, events)
            elif self.state is State.RECEIVING:
                self._discard("no frame within the receiver's timer", events)
                self.state = State.NEUTRAL
        if self.state is State.WAIT_BEFORE_ENQ and now >= self._not_before:
            self.state = State.NEUTRAL
        if self.state is State.NEUTRAL and self._queue and now >= self._not_before:
            self._out.append(ENQ)
            self.state = State.AWAIT_ENQ_REPLY
            self._deadline = now + self.sender_timeout
        return events

    def accept(self, now: float) -> None:
        """The consumer recorded the held message: ACK its last frame. No-op if nothing is held (the
        sender gave up meanwhile; it will send the message again)."""
        if self.state is State.HOLDING:
            self._out.append(ACK)
            self._held = None
            self._text.clear()
            self._last_accepted = self._expected
            self._expected = (self._expected + 1) % 8
            self.state = State.RECEIVING
            self._deadline = now + self.receiver_timeout

    def reject(self, now: float) -> None:
        """The consumer refused the held message: NAK its last frame (the sender retransmits it and, after
        six refusals, aborts with EOT)."""
        if self.state is State.HOLDING and self._held is not None:
            self._out.append(NAK)
            del self._text[len(self._text) - len(self._held) :]
            self._held = None
            self.state = State.RECEIVING
            self._deadline = now + self.receiver_timeout

    def reset(self, now: float) -> list[LinkEvent]:
        """The port was closed and opened again: drop any partial message, restart a send from ENQ."""
        events: list[LinkEvent] = []
        self._discard("connection lost", events)
        if self.state in (State.AWAIT_ENQ_REPLY, State.AWAIT_FRAME_REPLY) and self._queue:
            events.append(SendAborted(self._queue[0].tag, "connection lost"))
        self._out.clear()
        self.state = State.NEUTRAL
        self._deadline = None
        self._index, self._number, self._refusals = 0, 1, 0
        events.extend(self.tick(now))
        return events

    # ------------------------------------------------------------ outputs

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """When `tick` must be called next, or None."""
        times = [t for t in (self._deadline,) if t is not None]
        if self._queue and self.state in (State.NEUTRAL, State.WAIT_BEFORE_ENQ):
            times.append(self._not_before)
        return min(times) if times else None

    @property
    def pending(self) -> int:
        """Messages queued and not yet acknowledged."""
        return len(self._queue)

    # ------------------------------------------------------------ the machine

    def _receive_byte(self, byte: int, now: float, events: list[LinkEvent]) -> None:
        state = self.state
        if state is State.AWAIT_ENQ_REPLY:
            if byte == ACK:
                self.state = State.AWAIT_FRAME_REPLY
                self._index, self._number, self._refusals = 0, 1, 0
                self._send_frame(now)
            elif byte == NAK:  # receiver busy (6.2.6)
                self._wait(BUSY_DELAY, now)
            elif byte == ENQ:  # contention (6.2.7)
                if self.priority:
                    self._wait(CONTENTION_DELAY_INSTRUMENT, now)
                else:  # yield: the instrument sends ENQ again within a second; answer that one
                    self._wait(CONTENTION_DELAY_COMPUTER, now)
            return  # anything else is noise (6.2.5)
        if state is State.AWAIT_FRAME_REPLY:
            if byte in (ACK, EOT):  # EOT = receiver interrupt, an ACK too (6.3.6)
                self._frame_acknowledged(now, events)
            elif byte == NAK:
                self._refusals += 1
                events.append(FrameRefused(self._number % 8, self._refusals))
                if self._refusals >= MAX_REFUSALS:
                    self._abort(f"frame refused {MAX_REFUSALS} times", now, events)
                else:
                    self._send_frame(now)
            return
        if state is State.HOLDING:
            if byte == EOT:  # the sender gave up waiting for our ACK; it will send again
                self._held = None
                self._text.clear()
                self.state = State.NEUTRAL
                self._deadline = None
            elif byte == ENQ:  # the sender restarted
                self._held = None
                self._text.clear()
                self._start_receiving(now)
            return
        if state is State.RECEIVING:
            self._receive_in_session(byte, now, events)
            return
        # NEUTRAL or WAIT_BEFORE_ENQ: only ENQ matters (6.2.5)
        if byte == ENQ:
            self._start_receiving(now)

    def _receive_in_session(self, byte: int, now: float, events: list[LinkEvent]) -> None:
        if byte == EOT:  # termination (6.4); a partial message is dropped
            self._discard("EOT before the end of the message", events)
            self._frame = None
            self.state = State.NEUTRAL
            self._deadline = None
            return
        if byte == STX:  # STX never occurs inside a frame: a new frame starts here
            self._frame = bytearray([STX])
            self._overlong = False
            return
        if byte == ENQ:  # never inside a frame: the sender restarted (extension, see module doc)
            self._discard("the sender started a new session", events)
            self._start_receiving(now)
            return
        if self._frame is None:
            return  # noise between frames
        if len(self._frame) < MAX_FRAME:
            self._frame.append(byte)
        else:
            self._overlong = True
        if byte == LF:
            frame, self._frame = bytes(self._frame), None
            self._frame_received(frame, now, events)

    def _frame_received(self, frame: bytes, now: float, events: list[LinkEvent]) -> None:
        problem = None if not self._overlong else f"frame longer than {MAX_FRAME} characters"
        problem = problem or _check_frame(frame)
        self._deadline = now + self.receiver_timeout
        if problem:
            events.append(FrameRejected(problem))
            self._out.append(NAK)
            return
        number, text, final = frame[1] - 0x30, frame[2:-5], frame[-5] == ETX
        if number == self._last_accepted:  # a repeat of the frame we accepted: our ACK was lost
            self._out.append(ACK)
            return
        if number != self._expected:
            events.append(FrameRejected(f"frame number {number}, expected {self._expected}"))
            self._out.append(NAK)
            return
        if len(self._text) + len(text) > self.max_message:
            events.append(FrameRejected(f"message longer than {self.max_message} bytes"))
            self._out.append(NAK)
            return
        self._text += text
        if final:
            self._held = text
            self.state = State.HOLDING
            self._deadline = None  # we are the one waiting now
            events.append(MessageReceived(bytes(self._text)))
        else:
            self._last_accepted = number
            self._expected = (self._expected + 1) % 8
            self._out.append(ACK)

    def _start_receiving(self, now: float) -> None:
        self._out.append(ACK)
        self.state = State.RECEIVING
        self._frame = None
        self._text.clear()
        self._expected = 1
        self._last_accepted = None
        self._deadline = now + self.receiver_timeout

    def _discard(self, reason: str, events: list[LinkEvent]) -> None:
        if self.state in (State.RECEIVING, State.HOLDING) and (self._text or self._frame):
            if self.state is State.RECEIVING:
                events.append(MessageDiscarded(reason, len(self._text)))
        self._text.clear()
        self._held = None
        self._frame = None

    def _send_frame(self, now: float) -> None:
        frames = self._queue[0].frames
        final = self._index == len(frames) - 1
        self._out += encode_frame(self._number, frames[self._index], final)
        self._deadline = now + self.sender_timeout

    def _frame_acknowledged(self, now: float, events: list[LinkEvent]) -> None:
        frames = self._queue[0].frames
        if self._index == len(frames) - 1:
            events.append(MessageSent(self._queue.popleft().tag))
            self._out.append(EOT)
            self.state = State.NEUTRAL
            self._deadline = None
            self._not_before = now
            return
        self._index += 1
        self._number = (self._number + 1) % 8
        self._refusals = 0
        self._send_frame(now)

    def _abort(self, reason: str, now: float, events: list[LinkEvent]) -> None:
        self._out.append(EOT)
        events.append(SendAborted(self._queue[0].tag, reason))
        self._wait(self.retry_delay, now)

    def _wait(self, delay: float, now: float) -> None:
        self.state = State.WAIT_BEFORE_ENQ
        self._deadline = None
        self._not_before = now + delay


def _check_frame(frame: bytes) -> str | None:
    """Why `frame` (STX ... LF) is not a good frame, or None."""
    if len(frame) < 7 or frame[-2] != CR or frame[-5] not in (ETB, ETX):
        return "malformed frame"
    if not 0x30 <= frame[1] <= 0x37:
        return "frame number is not a digit 0-7"
    body = frame[1:-4]
    if checksum(body) != frame[-4:-2]:
        return f"checksum {frame[-4:-2]!r}, computed {checksum(body)!r}"
    if RESTRICTED.intersection(frame[2:-5]):
        return "restricted character in frame text"
    return None


__all__ = [
    "ACK", "CR", "ENQ", "EOT", "ETB", "ETX", "LF", "NAK", "STX", "MAX_REFUSALS", "MAX_TEXT",
    "FrameRefused", "FrameRejected", "Link", "LinkError", "LinkEvent", "MessageDiscarded", "MessageReceived",
    "MessageSent", "SendAborted", "State", "checksum", "encode_frame", "split_message",
]
