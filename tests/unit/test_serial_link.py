"""The ASTM E1381-style link layer, sans-IO: golden frames, byte-at-a-time feeding, faults, timers (fake clock)."""

from __future__ import annotations

import random

import pytest

from drivers.acquisition.serial.link import (
    ACK, ENQ, EOT, ETB, ETX, NAK, STX, FrameRefused, FrameRejected, Link, LinkError, MessageDiscarded, MessageReceived,
    MessageSent, SendAborted, State, checksum, encode_frame, split_message,
)

# ------------------------------------------------------------------ golden frames (checksums by hand)


def test_golden_end_frame() -> None:
    # '1' 0x31 + 'A' 0x41 + 'B' 0x42 + 'C' 0x43 + ETX 0x03 = 250 = 0xFA
    assert encode_frame(1, b"ABC", final=True) == b"\x021ABC\x03FA\r\n"


def test_golden_intermediate_frame_checksum_wraps_modulo_256() -> None:
    # '7' 55 + 'z' 122 * 3 + ETB 23 = 444; 444 - 256 = 188 = 0xBC
    assert encode_frame(7, b"zzz", final=False) == b"\x027zzz\x17BC\r\n"


def test_golden_frame_number_is_modulo_8_and_checksum_upper_case_hex() -> None:
    # frame 8 is numbered 0: '0' 48 + 'H' 72 + CR 13 + ETX 3 = 136 = 0x88
    assert encode_frame(8, b"H\r", final=True) == b"\x020H\r\x0388\r\n"
    assert checksum(b"1\x0a") == b"3B"  # upper case


def test_text_longer_than_240_or_restricted_characters_are_refused() -> None:
    with pytest.raises(LinkError):
        encode_frame(1, b"x" * 241, final=True)
    for bad in (STX, ETX, EOT, ENQ, ACK, NAK, ETB, 0x0A, 0x10, 0x11, 0x14):
        with pytest.raises(LinkError):
            split_message(b"ab" + bytes([bad]))
    assert split_message(b"a\rb") == [b"a\rb"]  # CR separates records: allowed


def test_split_message_in_240_character_frames() -> None:
    assert [len(t) for t in split_message(b"x" * 600)] == [240, 240, 120]
    assert split_message(b"") == [b""]


# ------------------------------------------------------------------ a pair of links


class Wire:
    """Two links joined back to back; `feed` can be byte-at-a-time; `tamper(direction, chunk)` for faults."""

    def __init__(self, sender: Link, receiver: Link, *, byte_at_a_time: bool = False) -> None:
        self.sender, self.receiver = sender, receiver
        self.now = 0.0
        self.byte_at_a_time = byte_at_a_time
        self.received: list[bytes] = []
        self.sender_events: list[object] = []
        self.receiver_events: list[object] = []
        self.tamper = lambda direction, chunk: chunk
        self.auto_accept = True

    def _feed(self, link: Link, data: bytes) -> list[object]:
        if not self.byte_at_a_time:
            return list(link.receive_data(data, self.now))
        out: list[object] = []
        for b in data:
            out += link.receive_data(bytes([b]), self.now)
        return out

    def run(self, steps: int = 100_000, *, advance_time: bool = True) -> None:
        for _ in range(steps):
            a = self.tamper("s->r", self.sender.data_to_send())
            if a:
                for e in self._feed(self.receiver, a):
                    self.receiver_events.append(e)
                    if isinstance(e, MessageReceived):
                        self.received.append(e.text)
                        if self.auto_accept:
                            self.receiver.accept(self.now)
            b = self.tamper("r->s", self.receiver.data_to_send())
            if b:
                self.sender_events += self._feed(self.sender, b)
            if not a and not b:
                if not advance_time:
                    return
                deadline = min([d for d in (self.sender.next_deadline(), self.receiver.next_deadline()) if d is not None],
                               default=None)
                if deadline is None:
                    return
                self.now = max(self.now, deadline)
                self.sender_events += self.sender.tick(self.now)
                self.receiver_events += self.receiver.tick(self.now)
                if self.sender.pending == 0:
                    return
        raise AssertionError("the link did not settle")


def message(n: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    alphabet = bytes(b for b in range(0x20, 0x7F)) + b"\r"
    return bytes(rnd.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("size", [0, 1, 240, 241, 2000])
def test_message_arrives_whole_byte_at_a_time(size: int) -> None:
    text = message(size)
    wire = Wire(Link(priority=True), Link(priority=False), byte_at_a_time=True)
    wire.sender.send_message(text, "m", 0.0)
    wire.run()
    assert wire.received == [text]
    assert [e for e in wire.sender_events if isinstance(e, MessageSent)] == [MessageSent("m")]
    assert wire.sender.state is State.NEUTRAL and wire.receiver.state is State.NEUTRAL


def test_session_bytes_on_the_wire() -> None:
    sender = Link(priority=True)
    sender.send_message(b"ABC", "m", 0.0)
    assert sender.data_to_send() == bytes([ENQ])
    sender.receive_data(bytes([ACK]), 0.0)
    assert sender.data_to_send() == b"\x021ABC\x03FA\r\n"
    assert sender.receive_data(bytes([ACK]), 0.0) == [MessageSent("m")]
    assert sender.data_to_send() == bytes([EOT])


def test_the_last_frame_is_acknowledged_only_when_the_consumer_accepts() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]), 0.0)
    assert receiver.data_to_send() == bytes([ACK])
    frames = [encode_frame(1, b"x" * 240, False), encode_frame(2, b"end", True)]
    assert receiver.receive_data(frames[0], 1.0) == []
    assert receiver.data_to_send() == bytes([ACK])
    assert receiver.receive_data(frames[1], 2.0) == [MessageReceived(b"x" * 240 + b"end")]
    assert receiver.data_to_send() == b""  # held
    assert receiver.next_deadline() is None  # our own 30 s timer does not run while we hold it
    receiver.accept(3.0)
    assert receiver.data_to_send() == bytes([ACK])
    receiver.receive_data(bytes([EOT]), 3.0)
    assert receiver.state is State.NEUTRAL


def test_bad_checksum_is_refused_and_the_retransmission_accepted() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]), 0.0)
    receiver.data_to_send()
    good = encode_frame(1, b"ABC", True)
    bad = good[:-4] + b"00" + good[-2:]
    events = receiver.receive_data(bad, 0.0)
    assert isinstance(events[0], FrameRejected) and "checksum" in events[0].reason
    assert receiver.data_to_send() == bytes([NAK])
    assert receiver.receive_data(good, 0.0) == [MessageReceived(b"ABC")]


@pytest.mark.parametrize("frame, why", [
    (b"\x021AB\x07C\x03" + checksum(b"1AB\x07C\x03") + b"\r\n", None),  # BEL is not restricted
    (b"\x029ABC\x03" + checksum(b"9ABC\x03") + b"\r\n", "frame number"),
    (b"\x021AB\x11C\x03" + checksum(b"1AB\x11C\x03") + b"\r\n", "restricted"),
    (b"\x021ABC\x03FA\n", "malformed"),
    (b"\x022ABC\x03" + checksum(b"2ABC\x03") + b"\r\n", "expected 1"),
])
def test_frame_checks(frame: bytes, why: str | None) -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]), 0.0)
    receiver.data_to_send()
    events = receiver.receive_data(frame, 0.0)
    if why is None:
        assert isinstance(events[0], MessageReceived)
    else:
        assert isinstance(events[0], FrameRejected) and why in events[0].reason, events
        assert receiver.data_to_send() == bytes([NAK])


def test_overlong_frame_is_refused() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]), 0.0)
    receiver.data_to_send()
    body = b"1" + b"x" * 300 + bytes([ETX])
    events = receiver.receive_data(b"\x02" + body + checksum(body) + b"\r\n", 0.0)
    assert isinstance(events[0], FrameRejected) and "longer" in events[0].reason


def test_repeated_frame_after_a_lost_ack_is_acknowledged_and_dropped() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]), 0.0)
    f1, f2 = encode_frame(1, b"AB", False), encode_frame(2, b"CD", True)
    receiver.receive_data(f1, 0.0)
    receiver.data_to_send()
    assert receiver.receive_data(f1, 0.0) == []  # the sender did not see our ACK
    assert receiver.data_to_send() == bytes([ACK])
    assert receiver.receive_data(f2, 0.0) == [MessageReceived(b"ABCD")]


def test_a_frame_refused_six_times_aborts_the_message_with_eot_and_it_is_sent_again() -> None:
    sender = Link(priority=True, retry_delay=2.0)
    sender.send_message(b"ABC", "m", 0.0)
    sender.data_to_send()
    sender.receive_data(bytes([ACK]), 0.0)
    frame = sender.data_to_send()
    transmissions = 1
    for n in range(1, 6):
        assert sender.receive_data(bytes([NAK]), float(n)) == [FrameRefused(1, n)]
        assert sender.data_to_send() == frame  # the same frame, the same number
        transmissions += 1
    assert sender.receive_data(bytes([NAK]), 6.0) == [FrameRefused(1, 6), SendAborted("m", "frame refused 6 times")]
    assert transmissions == 6
    assert sender.data_to_send() == bytes([EOT])
    assert sender.next_deadline() == 8.0
    sender.tick(7.9)
    assert sender.data_to_send() == b""
    sender.tick(8.0)
    assert sender.data_to_send() == bytes([ENQ])  # from the start again
    sender.receive_data(bytes([ACK]), 8.0)
    assert sender.data_to_send() == frame


def test_nak_to_enq_means_busy_wait_10_s() -> None:
    sender = Link(priority=True)
    sender.send_message(b"A", "m", 0.0)
    sender.data_to_send()
    sender.receive_data(bytes([NAK]), 1.0)
    sender.tick(10.9)
    assert sender.data_to_send() == b""
    sender.tick(11.0)
    assert sender.data_to_send() == bytes([ENQ])


def test_contention_instrument_waits_1_s_and_the_computer_yields_for_20_s() -> None:
    instrument, computer = Link(priority=True), Link(priority=False)
    instrument.send_message(b"from instrument", "i", 0.0)
    computer.send_message(b"from computer", "c", 0.0)
    assert instrument.data_to_send() == bytes([ENQ]) and computer.data_to_send() == bytes([ENQ])
    instrument.receive_data(bytes([ENQ]), 0.0)
    computer.receive_data(bytes([ENQ]), 0.0)
    assert instrument.data_to_send() == b"" and computer.data_to_send() == b""  # nobody answers the crossed ENQ
    wire = Wire(instrument, computer)
    wire.now = 0.5
    instrument.tick(0.5)
    assert instrument.data_to_send() == b""
    wire.now = 1.0
    instrument.tick(1.0)
    assert instrument.state is State.AWAIT_ENQ_REPLY
    computer.receive_data(bytes([ENQ]) + b"", 1.0)
    instrument.receive_data(computer.data_to_send(), 1.0)  # the computer ACKs the instrument's ENQ
    wire.run(1000, advance_time=False)
    assert wire.received == [b"from instrument"]
    assert computer.state is State.NEUTRAL
    assert computer.next_deadline() == 20.0  # its own ENQ not before 20 s after the contention
    computer.tick(19.0)
    assert computer.data_to_send() == b""
    computer.tick(20.0)
    assert computer.data_to_send() == bytes([ENQ])


def test_sender_15_s_timer_without_reply_sends_eot() -> None:
    sender = Link(priority=True, retry_delay=1.0)
    sender.send_message(b"A", "m", 0.0)
    assert sender.data_to_send() == bytes([ENQ])
    assert sender.next_deadline() == 15.0
    assert sender.tick(14.9) == []
    assert sender.tick(15.0) == [SendAborted("m", "no reply within the sender's timer")]
    assert sender.data_to_send() == bytes([EOT])
    sender.tick(16.0)
    assert sender.data_to_send() == bytes([ENQ])
    sender.receive_data(bytes([ACK]), 16.0)
    sender.data_to_send()
    assert sender.tick(30.9) == [] and sender.tick(31.0) == [SendAborted("m", "no reply within the sender's timer")]


def test_device_silent_mid_message_the_30_s_timer_discards_it() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]), 0.0)
    receiver.receive_data(encode_frame(1, b"x" * 240, False), 5.0)
    assert receiver.next_deadline() == 35.0
    assert receiver.tick(34.9) == []
    assert receiver.tick(35.0) == [MessageDiscarded("no frame within the receiver's timer", 240)]
    assert receiver.state is State.NEUTRAL
    # the rest of the message, late: the line is neutral, so it is noise; nothing half is delivered
    assert receiver.receive_data(encode_frame(2, b"end", True), 36.0) == []
    receiver.data_to_send()
    # the device starts over: the message arrives whole, once
    receiver.receive_data(bytes([ENQ]), 40.0)
    receiver.receive_data(encode_frame(1, b"x" * 240, False), 40.0)
    assert receiver.receive_data(encode_frame(2, b"end", True), 40.0) == [MessageReceived(b"x" * 240 + b"end")]


def test_eot_mid_message_discards_it() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]) + encode_frame(1, b"abc", False), 0.0)
    assert receiver.receive_data(bytes([EOT]), 1.0) == [MessageDiscarded("EOT before the end of the message", 3)]
    assert receiver.state is State.NEUTRAL


def test_sender_restarted_mid_message_the_message_arrives_once_and_whole() -> None:
    text = message(1000, seed=3)
    frames = split_message(text)
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]), 0.0)
    for n, t in enumerate(frames[:2], 1):
        receiver.receive_data(encode_frame(n, t, False), 0.0)
    receiver.receive_data(encode_frame(3, frames[2], False)[:30], 0.0)  # cut in the middle of a frame
    receiver.data_to_send()
    sender = Link(priority=True)  # the device, rebooted
    sender.send_message(text, "again", 1.0)
    wire = Wire(sender, receiver)
    wire.now = 1.0
    wire.run()
    assert wire.received == [text]
    assert any(isinstance(e, MessageDiscarded) for e in wire.receiver_events)


def test_receiver_rejects_a_message_nak_on_its_last_frame_until_the_sender_aborts() -> None:
    wire = Wire(Link(priority=True, retry_delay=5.0), Link(priority=False))
    wire.auto_accept = False
    text = message(500)
    wire.sender.send_message(text, "m", 0.0)
    for _ in range(1000):
        a = wire.sender.data_to_send()
        for e in wire.receiver.receive_data(a, 0.0):
            if isinstance(e, MessageReceived):
                wire.received.append(e.text)
                wire.receiver.reject(0.0)
        b = wire.receiver.data_to_send()
        events = [e for e in wire.sender.receive_data(b, 0.0) if not isinstance(e, FrameRefused)]
        if events:
            break
    assert events == [SendAborted("m", "frame refused 6 times")]
    assert wire.received == [text] * 6  # the same whole message each time, never a part
    assert wire.sender.data_to_send() == bytes([EOT])
    wire.receiver.receive_data(bytes([EOT]), 0.0)
    assert wire.receiver.state is State.NEUTRAL


def test_eot_while_the_ack_is_held_then_accept_sends_nothing() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]) + encode_frame(1, b"abc", True), 0.0)
    receiver.data_to_send()
    receiver.receive_data(bytes([EOT]), 15.0)  # the sender's timer ran out first
    receiver.accept(16.0)
    assert receiver.data_to_send() == b""
    assert receiver.state is State.NEUTRAL


def test_frame_numbers_wrap_over_many_frames() -> None:
    text = message(240 * 20 + 7)
    wire = Wire(Link(priority=True), Link(priority=False))
    numbers: list[int] = []

    def spy(direction: str, chunk: bytes) -> bytes:
        if direction == "s->r" and chunk[:1] == bytes([STX]):
            numbers.append(chunk[1] - 0x30)
        return chunk

    wire.tamper = spy
    wire.sender.send_message(text, "m", 0.0)
    wire.run()
    assert wire.received == [text]
    assert numbers == [(i + 1) % 8 for i in range(21)]


@pytest.mark.parametrize("seed", range(40))
def test_line_faults_in_both_directions_message_arrives_once_and_whole(seed: int) -> None:
    rnd = random.Random(seed)
    texts = [message(rnd.randint(0, 3000), seed=seed * 10 + i) for i in range(4)]

    def tamper(direction: str, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        r = rnd.random()
        if r < 0.08:
            return b""  # lost
        if r < 0.16 and chunk[0] == STX:  # a flipped bit
            i = rnd.randrange(1, len(chunk))
            return chunk[:i] + bytes([chunk[i] ^ (1 << rnd.randrange(8))]) + chunk[i + 1:]
        if r < 0.30:  # noise before it (never EOT, ENQ, ACK, NAK: those are meaningful to the other side)
            noise = bytes(rnd.choice([b for b in range(256) if b not in (EOT, ENQ, ACK, NAK)]) for _ in range(rnd.randint(1, 20)))
            return noise + chunk
        return chunk

    wire = Wire(Link(priority=True, retry_delay=1.0), Link(priority=False), byte_at_a_time=bool(seed % 2))
    wire.tamper = tamper
    for i, t in enumerate(texts):
        wire.sender.send_message(t, i, 0.0)
    wire.run(1_000_000)
    # each message delivered whole; a delivery repeated only when its final ACK was lost (at least once)
    deduplicated = [t for i, t in enumerate(wire.received) if i == 0 or wire.received[i - 1] != t]
    assert deduplicated == texts
    assert [e.tag for e in wire.sender_events if isinstance(e, MessageSent)] == [0, 1, 2, 3]


def test_reset_discards_a_partial_message() -> None:
    receiver = Link(priority=False)
    receiver.receive_data(bytes([ENQ]) + encode_frame(1, b"abc", False), 0.0)
    assert receiver.reset(1.0) == [MessageDiscarded("connection lost", 3)]
    assert receiver.state is State.NEUTRAL


def test_intermediate_frame_marker_is_etb() -> None:
    sender = Link(priority=True)
    sender.send_message(b"y" * 241, "m", 0.0)
    sender.data_to_send()
    sender.receive_data(bytes([ACK]), 0.0)
    first = sender.data_to_send()
    assert first[-5] == ETB and len(first) == 247
    sender.receive_data(bytes([ACK]), 0.0)
    assert sender.data_to_send()[-5] == ETX


def test_a_stale_reply_read_with_the_current_one_is_ignored() -> None:
    sender = Link(priority=True)
    sender.send_message(b"A" * 300, "m", 0.0)
    sender.data_to_send()
    sender.receive_data(bytes([ACK]), 0.0)
    first = sender.data_to_send()
    # NAK (ours) and an ACK sent before our retransmission could have arrived: only the NAK counts
    sender.receive_data(bytes([NAK, ACK]), 1.0)
    assert sender.data_to_send() == first
    sender.receive_data(bytes([ACK]), 2.0)
    assert sender.data_to_send()[1:2] == b"2"


def test_a_message_longer_than_the_limit_is_refused_and_dropped() -> None:
    wire = Wire(Link(priority=True, retry_delay=1.0), Link(priority=False, max_message=1000))
    wire.sender.send_message(b"x" * 1200, "big", 0.0)
    for _ in range(200):
        a = wire.sender.data_to_send()
        events = wire.receiver.receive_data(a, 0.0)
        assert not any(isinstance(e, MessageReceived) for e in events)
        aborted = [e for e in wire.sender.receive_data(wire.receiver.data_to_send(), 0.0) if isinstance(e, SendAborted)]
        if aborted:
            break
    assert aborted == [SendAborted("big", "frame refused 6 times")]
    assert any(isinstance(e, FrameRejected) and "longer than 1000" in e.reason for e in events)
    wire.receiver.receive_data(wire.sender.data_to_send(), 0.0)  # EOT
    assert wire.receiver.state is State.NEUTRAL


def test_send_message_refuses_restricted_characters_at_once() -> None:
    with pytest.raises(LinkError):
        Link(priority=True).send_message(b"H|\x04|1", "m", 0.0)
