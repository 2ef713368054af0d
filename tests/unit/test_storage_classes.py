"""One definition of "Storage SOP Class", checked against a list transcribed by hand from PS3.4 Table B.5-1
(and Annex GG for the non-patient objects), and used alike by the profile validator and the Storage SCP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.profile import load_profile
from agent.services.storage import ALL_STORAGE_SOP_CLASSES as SCP_ACCEPTS
from agent.services.storage_classes import ALL_STORAGE_SOP_CLASSES, is_storage_sop_class

#: Transcribed from PS3.4 Table B.5-1: every class whose name goes on after "Storage"
#: ("- For Presentation", "- For Processing"), which a rule on the name's ending misses.
FOR_PRESENTATION_OR_PROCESSING = {
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.3": "Digital Intra-Oral X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "Digital Intra-Oral X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.14.1": "Intravascular OCT Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.14.2": "Intravascular OCT Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.501.2.1": "DICOS Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.501.2.2": "DICOS Digital X-Ray Image Storage - For Processing",
}

#: Retired storage classes (PS3.4 B.5 of earlier editions; PS3.6 Table A-1 marks them retired) that old
#: devices still send, the trial ones among them.
RETIRED = {
    "1.2.840.10008.5.1.4.1.1.5": "Nuclear Medicine Image Storage (retired)",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (retired)",
    "1.2.840.10008.5.1.4.1.1.77.1": "VL Image Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.77.2": "VL Multi-frame Image Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.88.1": "Text SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.88.2": "Audio SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.88.3": "Detail SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.88.4": "Comprehensive SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.9.1": "Waveform Storage - Trial",
    "1.2.840.10008.5.1.4.34.1": "RT Beams Delivery Instruction Storage - Trial",
    "1.2.840.10008.5.1.1.27": "Stored Print Storage",
    "1.2.840.10008.5.1.1.29": "Hardcopy Grayscale Image Storage",
    "1.2.840.10008.5.1.1.30": "Hardcopy Color Image Storage",
}

#: A sample of the current Table B.5-1 (and GG.3-1 non-patient objects) across the modalities.
SAMPLE = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.6": "VL Whole Slide Microscopy Image Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.1": "RT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
    "1.2.840.10008.5.1.4.34.7": "RT Beams Delivery Instruction Storage",
    "1.2.840.10008.5.1.4.38.1": "Hanging Protocol Storage",
    "1.2.840.10008.5.1.4.39.1": "Color Palette Storage",
}

#: Named "... Storage" but not stored with C-STORE.
NOT_STORAGE = {
    "1.2.840.10008.1.3.10": "Media Storage Directory Storage (PS3.10 DICOMDIR)",
    "1.2.840.10008.1.20.1": "Storage Commitment Push Model SOP Class",
    "1.2.840.10008.1.20.2": "Storage Commitment Pull Model SOP Class (retired)",
    "1.2.840.10008.1.1": "Verification SOP Class",
    "1.2.840.10008.5.1.4.31": "Modality Worklist Information Model - FIND",
    "1.2.840.10008.5.1.4.1.2.2.1": "Study Root Query/Retrieve Information Model - FIND",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian (a transfer syntax)",
}

STORAGE = {**FOR_PRESENTATION_OR_PROCESSING, **RETIRED, **SAMPLE}


@pytest.mark.parametrize("uid", sorted(STORAGE), ids=lambda u: STORAGE[u])
def test_storage_class_accepted_by_the_scp(uid: str) -> None:
    assert is_storage_sop_class(uid)
    assert uid in ALL_STORAGE_SOP_CLASSES
    assert uid in SCP_ACCEPTS  # what `accept = "all-storage"` registers


@pytest.mark.parametrize("uid", sorted(NOT_STORAGE), ids=lambda u: NOT_STORAGE[u])
def test_not_a_storage_class(uid: str) -> None:
    assert not is_storage_sop_class(uid)
    assert uid not in SCP_ACCEPTS


def test_no_repeats_and_all_in_the_registry() -> None:
    assert len(set(ALL_STORAGE_SOP_CLASSES)) == len(ALL_STORAGE_SOP_CLASSES)
    assert len(ALL_STORAGE_SOP_CLASSES) >= len(STORAGE)


PROFILE = """
[agent]
ae_title = "TEST"
bind = "127.0.0.1"
port = 0

[storage]
accept = [{entries}]
"""


def test_profile_and_scp_agree_on_every_class(tmp_path: Path) -> None:
    """Every class the SCP accepts under "all-storage" may be named in `accept`, by keyword or by UID."""
    from pydicom.uid import UID_dictionary

    keywords = [UID_dictionary[u][4] for u in SCP_ACCEPTS]
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.format(entries=", ".join(f'"{k}"' for k in keywords)))
    assert load_profile(path).storage.sop_classes == SCP_ACCEPTS
    path.write_text(PROFILE.format(entries=", ".join(f'"{u}"' for u in SCP_ACCEPTS)))
    assert load_profile(path).storage.sop_classes == SCP_ACCEPTS


@pytest.mark.parametrize("entry", ["MediaStorageDirectoryStorage", "1.2.840.10008.1.3.10",
                                   "StorageCommitmentPushModel", "1.2.840.10008.1.20.1"])
def test_profile_refuses_what_the_scp_refuses(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.format(entries=f'"{entry}"'))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.key == "storage.accept[0]"
