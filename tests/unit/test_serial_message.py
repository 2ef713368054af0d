"""The serial record format (drivers/acquisition/PROTOCOL.md): golden messages, round trips, clear errors."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.acquisition.serial.message import MessageError, encode_message, escape, parse_message, unescape
from drivers.base import ImageAcquired, Measurement, PatientData, ProcedureEnded, ProcedureStarted


def test_golden_procedure_start() -> None:
    event = ProcedureStarted("P-1", "ACC42", PatientData("PID7", "DOE^JANE", "19800102", "F"), "Knee", "TECH",
                             1_700_000_000.0)
    assert encode_message("US-01", [event]) == (
        b"H|US-01|1\r"
        b"P|PID7|DOE^JANE|19800102|F\r"
        b"S|P-1|ACC42|Knee|TECH|20231114221320\r"
        b"L|N"
    )
    assert parse_message(encode_message("US-01", [event])) == ("US-01", [event])


def test_golden_image_record_written_by_hand() -> None:
    payload = bytes([0x01, 0x00, 0xFF, 0x0F, 0x00, 0x01, 0x34, 0x02])  # 2x2, 12 bits, little endian
    text = ("H|DEV|1\rI|P-1|img1|2|2|12|MONOCHROME2|0.2^0.3|ViewPosition=AP^BodyPartExamined=KNEE|8|%08X\rD|%s\rL|N"
            % (zlib.crc32(payload), base64.b64encode(payload).decode()))
    device, [image] = parse_message(text.encode())
    assert device == "DEV"
    assert isinstance(image, ImageAcquired)
    assert image.pixels.tolist() == [[0x0001, 0x0FFF], [0x0100, 0x0234]]
    assert (image.bits_stored, image.photometric, image.pixel_spacing_mm) == (12, "MONOCHROME2", (0.2, 0.3))
    assert image.attributes == (("ViewPosition", "AP"), ("BodyPartExamined", "KNEE"))


def test_image_512x512x16_round_trip_bit_exact() -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 1 << 16, size=(512, 512), dtype=np.uint16)
    data = encode_message("D", [ImageAcquired("P", "1", pixels, 16)])
    assert max(data) < 0x80 and not set(data) & {0x02, 0x03, 0x04, 0x05, 0x0A, 0x17}
    _, [image] = parse_message(data)
    assert image.pixels.dtype == np.uint16 and np.array_equal(image.pixels, pixels)


def test_rgb_and_8_bit_images_round_trip() -> None:
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    _, [a, b] = parse_message(encode_message("D", [ImageAcquired("P", "1", rgb, 8, "RGB"),
                                                   ImageAcquired("P", "2", gray, 8, "MONOCHROME1")]))
    assert np.array_equal(a.pixels, rgb) and a.photometric == "RGB"
    assert np.array_equal(b.pixels, gray) and b.photometric == "MONOCHROME1"


def test_several_events_in_one_message_in_order() -> None:
    events = [ProcedureStarted("P", "W"), Measurement("P", "DLP", "12.5", "mGy.cm"), ProcedureEnded("P", True, "patient left")]
    assert parse_message(encode_message("D", events)) == ("D", events)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("|^&\r"), max_size=40))
def test_escapes_round_trip(value: str) -> None:
    assert unescape(escape(value)) == value
    event = ProcedureEnded("P", True, value)
    assert parse_message(encode_message("D", [event]))[1] == [event]


def good_image_text(**changes: str) -> str:
    payload = bytes(range(4))
    fields = {"rows": "2", "cols": "2", "bits": "8", "phot": "MONOCHROME2", "len": "4",
              "crc": "%08X" % zlib.crc32(payload), "data": base64.b64encode(payload).decode(), "spacing": ""}
    fields.update(changes)
    return ("H|D|1\rI|P|1|{rows}|{cols}|{bits}|{phot}|{spacing}||{len}|{crc}\rD|{data}\rL|N").format(**fields)


@pytest.mark.parametrize("text, expected", [
    ("S|P||||\rL|N", "starts with an H record"),
    ("H|D|1\rS|P||||", "ends with an L record"),
    ("H|D|2\rL|N", "protocol version '2'"),
    ("H|D|1\rX|1\rL|N", "record 2: unknown record type 'X'"),
    ("H|D|1\rS|P|||\rL|N", r"record 2 \(S\): 4 fields, expected 5"),
    ("H|D|1\rS|||||\rL|N", r"record 2 \(S\): procedure key is empty"),
    ("H|D|1\rS|P||||2023-01-01\rL|N", "timestamp"),
    ("H|D|1\rP|1|A^B|1980|F\rS|P||||\rL|N", "birth date"),
    ("H|D|1\rP|1|A^B|19800101|X\rS|P||||\rL|N", "sex 'X'"),
    ("H|D|1\rP|1|A^B|19800101|F\rL|N", "P record not followed by an S record"),
    ("H|D|1\rD|AAAA\rL|N", "D record without an I record"),
    ("H|D|1\rE|P|X|\rL|N", "status 'X'"),
    ("H|D|1\rE|P|A|a&Q&b\rL|N", "unknown escape"),
    ("H|D|1\rL|N\rL|N", "L only at the end"),
    (good_image_text(data="AAA*"), "not valid base64"),
    (good_image_text(crc="00000000"), "CRC-32"),
    (good_image_text(len="5"), "payload of 5 bytes"),
    (good_image_text(rows="3", len="6"), "6 payload bytes announced|3 payload|4 payload bytes received"),
    (good_image_text(bits="1"), "exceeds 1 bits"),
    (good_image_text(bits="17"), "bits stored '17'"),
    (good_image_text(phot="YBR_FULL"), "photometric 'YBR_FULL'"),
    (good_image_text(spacing="0.1"), "pixel spacing"),
    (good_image_text(phot="RGB"), "payload of 4 bytes"),
])
def test_bad_messages_are_refused_with_a_clear_error(text: str, expected: str) -> None:
    with pytest.raises(MessageError, match=expected):
        parse_message(text.encode())


def test_not_utf8_is_refused() -> None:
    with pytest.raises(MessageError, match="not UTF-8"):
        parse_message(b"H|\xff|1\rL|N")


def test_good_image_text_is_good() -> None:
    _, [image] = parse_message(good_image_text().encode())
    assert image.pixels.tolist() == [[0, 1], [2, 3]]


def test_a_data_set_file_cannot_go_over_the_link() -> None:
    with pytest.raises(MessageError):
        encode_message("D", [ImageAcquired("P", "1", None, dicom_file="/tmp/x.dcm")])
