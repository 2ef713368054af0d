"""Sequence keys of the Q/R SCP (issue 12; PS3.4 C.2.2.2.6) with real clients: pynetdicom and DCMTK
findscu query an agent that received, through storescu, instances carrying the seed's sequence keys:

- SERIES: Request Attributes Sequence > Requested Procedure ID, Scheduled Procedure Step ID (one series
  with two items, one with an undefined-length sequence, one without the sequence);
- IMAGE, presentation state: Referenced Series Sequence > Series Instance UID, > Referenced Image
  Sequence > Referenced SOP Class / Instance UID;
- IMAGE, SR: Verifying Observer Sequence (an ISO_IR 192 name and organization inside the item),
  Referenced Request Sequence (> Requested Procedure Code Sequence), Concept Name Code Sequence,
  Content Template Sequence.

The agent's own SCU (`dicom-agent find -k Sequence[0].Key=value`) is a third client.

The expected matches are computed here from the files with pydicom and plain Python predicates, not
with agent.matching. DCMTK's dcmqrscp is no reference for these keys: its index keeps none of them and
it answers such a key with an empty value without matching on it (`test_dcmqrscp_does_not_match_sequences`
checks that this still holds, so the choice is revisited if a DCMTK release changes it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComprehensiveSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
)

from tests.conftest import free_port, require_pynetdicom, require_tool
from tests.interop.qr_peers import dcmqrscp, wait_port

pytestmark = pytest.mark.interop

PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}
AGENT_AE = "QRSEQ"
ROOT = "1.2.826.0.1.3680043.8.498.7713"
STUDY = f"{ROOT}.1"
NAME = "Wałęsa^Łucja"
ORG = "Szpital Łódź"


def _item(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _instance(sop_class: str, series: str, number: int, modality: str, syntax: str = ExplicitVRLittleEndian,
              **keys: object) -> Dataset:
    ds = _item(SpecificCharacterSet="ISO_IR 192", SOPClassUID=sop_class, SOPInstanceUID=f"{series}.{number}",
               PatientName="SEQ^PATIENT", PatientID="QS-P1", StudyInstanceUID=STUDY, StudyDate="20240611",
               StudyTime="101010", AccessionNumber="ACC1", StudyID="1", Modality=modality,
               SeriesInstanceUID=series, SeriesNumber=int(series.rsplit(".", 1)[1]), InstanceNumber=number)
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    return ds


def make_files(directory: Path) -> list[Path]:
    """Four CT series (request attributes: two items / one, undefined length, Implicit VR / none), a
    presentation state series and an SR series of two documents."""
    directory.mkdir(parents=True)
    two = Sequence([_item(RequestedProcedureID="RP1", ScheduledProcedureStepID="SPS1"),
                    _item(RequestedProcedureID="RP2", ScheduledProcedureStepID="SPS2")])
    one = Sequence([_item(RequestedProcedureID="RP3", ScheduledProcedureStepID="SPS3")])
    datasets = [
        _instance(CTImageStorage, f"{ROOT}.1.1", 1, "CT", RequestAttributesSequence=two),
        _instance(CTImageStorage, f"{ROOT}.1.1", 2, "CT", RequestAttributesSequence=two),
        _instance(CTImageStorage, f"{ROOT}.1.2", 1, "CT", ImplicitVRLittleEndian, RequestAttributesSequence=one),
        _instance(CTImageStorage, f"{ROOT}.1.3", 1, "CT"),
        _instance(GrayscaleSoftcopyPresentationStateStorage, f"{ROOT}.1.4", 1, "PR", ContentLabel="PS1",
                  ReferencedSeriesSequence=Sequence([_item(
                      SeriesInstanceUID=f"{ROOT}.1.1", ReferencedImageSequence=Sequence([
                          _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=f"{ROOT}.1.1.1"),
                          _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=f"{ROOT}.1.1.2"),
                      ]))])),
        _instance(ComprehensiveSRStorage, f"{ROOT}.1.5", 1, "SR", CompletionFlag="COMPLETE",
                  VerificationFlag="VERIFIED",
                  VerifyingObserverSequence=Sequence([_item(
                      VerifyingOrganization=ORG, VerificationDateTime="20240611101500", VerifyingObserverName=NAME,
                      VerifyingObserverIdentificationCodeSequence=Sequence([_code("V1", "99X", "Łucja W.")]))]),
                  ReferencedRequestSequence=Sequence([_item(
                      StudyInstanceUID=STUDY, AccessionNumber="ACC1", RequestedProcedureID="RP1",
                      RequestedProcedureCodeSequence=Sequence([_code("P1", "99X", "CT head")]))]),
                  ConceptNameCodeSequence=Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")]),
                  ContentTemplateSequence=Sequence([_item(MappingResource="DCMR", TemplateIdentifier="2000")])),
        _instance(ComprehensiveSRStorage, f"{ROOT}.1.5", 2, "SR", CompletionFlag="PARTIAL",
                  VerificationFlag="UNVERIFIED",
                  ConceptNameCodeSequence=Sequence([_code("11528-7", "LN", "Radiology Report")]),
                  ContentTemplateSequence=Sequence([_item(MappingResource="DCMR", TemplateIdentifier="1500")])),
    ]
    datasets[2]["RequestAttributesSequence"].is_undefined_length = True
    for item in datasets[2].RequestAttributesSequence:
        item.is_undefined_length_sequence_item = True
    out = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


@dataclass
class Setup:
    work: Path
    port: int
    files: list[Path]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_tool("storescu")
    work = tmp_path_factory.mktemp("qrseq")
    files = make_files(work / "files")
    port = free_port()
    profile = work / "agent" / "profile.toml"
    profile.parent.mkdir()
    profile.write_text(f"""
[agent]
ae_title = "{AGENT_AE}"
bind = "127.0.0.1"
port = {port}
data_dir = "{work / 'agent' / 'data'}"

[storage]

[query]
""")
    with open(work / "agent.log", "wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, agent)
        done = subprocess.run(["storescu", "-aec", AGENT_AE, "127.0.0.1", str(port), *map(str, files)],
                              env=PEER_ENV, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        yield Setup(work, port, files)
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def _datasets(setup: Setup) -> list[Dataset]:
    return [dcmread(p) for p in setup.files]


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    return list(ds.get(keyword) or [])


# (level, identifier keys beyond the level's upper unique keys, predicate on a file's data set)
Predicate = Callable[[Dataset], bool]
SERIES_QUERIES: list[tuple[str, Dataset, Predicate]] = [
    ("universal, zero items", _item(RequestAttributesSequence=Sequence()), lambda ds: True),
    ("universal, one empty item", _item(RequestAttributesSequence=Sequence([Dataset()])), lambda ds: True),
    ("universal item keys", _item(RequestAttributesSequence=Sequence([_item(RequestedProcedureID="")])),
     lambda ds: True),
    ("single value", _item(RequestAttributesSequence=Sequence([_item(RequestedProcedureID="RP1",
                                                                      ScheduledProcedureStepID="")])),
     lambda ds: any(i.RequestedProcedureID == "RP1" for i in _items(ds, "RequestAttributesSequence"))),
    ("wildcard", _item(RequestAttributesSequence=Sequence([_item(RequestedProcedureID="RP*")])),
     lambda ds: any(i.RequestedProcedureID.startswith("RP") for i in _items(ds, "RequestAttributesSequence"))),
    ("undefined length, Implicit VR", _item(RequestAttributesSequence=Sequence([
        _item(ScheduledProcedureStepID="SPS3")])),
     lambda ds: any(i.ScheduledProcedureStepID == "SPS3" for i in _items(ds, "RequestAttributesSequence"))),
    ("both keys of one item", _item(RequestAttributesSequence=Sequence([
        _item(RequestedProcedureID="RP1", ScheduledProcedureStepID="SPS2")])), lambda ds: False),
]
IMAGE_QUERIES: list[tuple[str, Dataset, Predicate]] = [
    ("code item", _item(ConceptNameCodeSequence=Sequence([_item(CodeValue="18748-4", CodingSchemeDesignator="LN",
                                                                CodeMeaning="")])),
     lambda ds: any(c.CodeValue == "18748-4" for c in _items(ds, "ConceptNameCodeSequence"))),
    ("template", _item(ContentTemplateSequence=Sequence([_item(TemplateIdentifier="1500")])),
     lambda ds: any(t.TemplateIdentifier == "1500" for t in _items(ds, "ContentTemplateSequence"))),
    ("ISO_IR 192 name, any case", _item(SpecificCharacterSet="ISO_IR 192", VerifyingObserverSequence=Sequence([
        _item(VerifyingObserverName="wałęsa*", VerifyingOrganization="")])),
     lambda ds: any(str(o.VerifyingObserverName).lower().startswith("wałęsa")
                    for o in _items(ds, "VerifyingObserverSequence"))),
    ("datetime range", _item(VerifyingObserverSequence=Sequence([_item(VerificationDateTime="20240601-20240630")])),
     lambda ds: any("20240601" <= o.VerificationDateTime[:8] <= "20240630"
                    for o in _items(ds, "VerifyingObserverSequence"))),
    ("UID list", _item(ReferencedRequestSequence=Sequence([_item(StudyInstanceUID=f"{ROOT}.9\\{STUDY}",
                                                                 AccessionNumber="")])),
     lambda ds: any(r.StudyInstanceUID == STUDY for r in _items(ds, "ReferencedRequestSequence"))),
    ("nested code", _item(ReferencedRequestSequence=Sequence([_item(RequestedProcedureCodeSequence=Sequence([
        _item(CodeValue="P1")]))])),
     lambda ds: any(c.CodeValue == "P1" for r in _items(ds, "ReferencedRequestSequence")
                    for c in _items(r, "RequestedProcedureCodeSequence"))),
    ("presentation state, nested UID", _item(ReferencedSeriesSequence=Sequence([_item(
        SeriesInstanceUID=f"{ROOT}.1.1", ReferencedImageSequence=Sequence([
            _item(ReferencedSOPInstanceUID=f"{ROOT}.1.1.2")]))])),
     lambda ds: any(s.SeriesInstanceUID == f"{ROOT}.1.1" and any(
         i.ReferencedSOPInstanceUID == f"{ROOT}.1.1.2" for i in s.ReferencedImageSequence)
         for s in _items(ds, "ReferencedSeriesSequence"))),
    ("no such image", _item(ReferencedSeriesSequence=Sequence([_item(ReferencedImageSequence=Sequence([
        _item(ReferencedSOPInstanceUID=f"{ROOT}.1.1.9")]))])), lambda ds: False),
    ("a sequence no instance of a CT series has, universal", _item(ConceptNameCodeSequence=Sequence()),
     lambda ds: True),
]


def _find(assoc: object, level: str, keys: Dataset) -> tuple[list[Dataset], list[int]]:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as SFIND

    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    identifier.StudyInstanceUID = STUDY
    identifier.SeriesInstanceUID = "" if level == "SERIES" else None
    if level == "IMAGE":
        identifier.SOPInstanceUID = ""
    for elem in keys:
        identifier.add(elem)
    matches, statuses = [], []
    for status, found in assoc.send_c_find(identifier, SFIND):  # type: ignore[attr-defined]
        assert status is not None and "Status" in status, "no response"
        statuses.append(int(status.Status))
        if found is not None and status.Status in (0xFF00, 0xFF01):
            matches.append(found)
    return matches, statuses


@pytest.fixture
def assoc(setup: Setup) -> Iterator[object]:
    require_pynetdicom()
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as SFIND

    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(SFIND)
    association = ae.associate("127.0.0.1", setup.port, ae_title=AGENT_AE)
    assert association.is_established
    yield association
    association.release()


def test_series_level_request_attributes(setup: Setup, assoc: object) -> None:
    """Universal and non-universal Request Attributes Sequence at SERIES level: the series whose latest
    instance carries a matching item, each status FF00 (the key is matched, no longer FF01)."""
    by_series: dict[str, Dataset] = {}
    for ds in _datasets(setup):
        by_series[str(ds.SeriesInstanceUID)] = ds  # the latest instance of a series describes it
    for name, keys, predicate in SERIES_QUERIES:
        found, statuses = _find(assoc, "SERIES", keys)
        want = sorted(uid for uid, ds in by_series.items() if predicate(ds))
        assert sorted(str(m.SeriesInstanceUID) for m in found) == want, name
        assert statuses == [0xFF00] * len(want) + [0x0000], name
    # What comes back: zero items -> the stored items whole; an item with keys -> the matching items,
    # reduced to those keys; a series without the sequence -> zero length.
    found, _ = _find(assoc, "SERIES", SERIES_QUERIES[0][1])
    got = {str(m.SeriesInstanceUID): m.RequestAttributesSequence for m in found}
    assert [(i.RequestedProcedureID, i.ScheduledProcedureStepID) for i in got[f"{ROOT}.1.1"]] == [
        ("RP1", "SPS1"), ("RP2", "SPS2")]
    assert [i.RequestedProcedureID for i in got[f"{ROOT}.1.2"]] == ["RP3"]
    assert len(got[f"{ROOT}.1.3"]) == 0 and len(got[f"{ROOT}.1.5"]) == 0
    found, _ = _find(assoc, "SERIES", _item(RequestAttributesSequence=Sequence([_item(RequestedProcedureID="RP2")])))
    assert len(found) == 1
    items = found[0].RequestAttributesSequence
    assert len(items) == 1 and list(items[0].keys()) == [0x00401001] and items[0].RequestedProcedureID == "RP2"


def test_image_level_sequences(setup: Setup, assoc: object) -> None:
    """Every IMAGE sequence key of the seed, single value, wildcard, UID list, range and nested items."""
    datasets = _datasets(setup)
    for name, keys, predicate in IMAGE_QUERIES:
        for series in (f"{ROOT}.1.1", f"{ROOT}.1.4", f"{ROOT}.1.5"):
            scoped = Dataset()
            scoped.SeriesInstanceUID = series
            for elem in keys:
                scoped.add(elem)
            found, statuses = _find(assoc, "IMAGE", scoped)
            want = sorted(str(ds.SOPInstanceUID) for ds in datasets
                          if ds.SeriesInstanceUID == series and predicate(ds))
            assert sorted(str(m.SOPInstanceUID) for m in found) == want, (name, series)
            assert statuses == [0xFF00] * len(want) + [0x0000], (name, series)
            by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
            for m in found:  # every sequence key is answered; with zero length when the instance lacks it
                for elem in keys:
                    if elem.VR == "SQ":
                        assert elem.keyword in m, (name, elem.keyword)
                        if elem.keyword not in by_uid[str(m.SOPInstanceUID)]:
                            assert len(m[elem.tag].value) == 0, (name, elem.keyword)


def test_iso_ir_192_text_inside_an_item(setup: Setup, assoc: object) -> None:
    """A name and an organization with Polish letters come back inside the item, in the instance's
    character set (ISO_IR 192), for a universal item ('*': both documents, the one without the
    sequence with it empty) and for a UTF-8 key in another case."""
    for name, want in (("*", [f"{ROOT}.1.5.1", f"{ROOT}.1.5.2"]), ("WAŁĘSA^Ł*", [f"{ROOT}.1.5.1"])):
        keys = _item(SpecificCharacterSet="ISO_IR 192", SeriesInstanceUID=f"{ROOT}.1.5", VerifyingObserverSequence=
                     Sequence([_item(VerifyingObserverName=name, VerifyingOrganization="",
                                     VerifyingObserverIdentificationCodeSequence=Sequence())]))
        found, _ = _find(assoc, "IMAGE", keys)
        found.sort(key=lambda m: str(m.SOPInstanceUID))
        assert [str(m.SOPInstanceUID) for m in found] == want, name
        assert len(found[-1].VerifyingObserverSequence) == len(want) % 2  # 5.2 has none
        (item,) = found[0].VerifyingObserverSequence
        assert found[0].SpecificCharacterSet == "ISO_IR 192"
        assert (str(item.VerifyingObserverName), item.VerifyingOrganization) == (NAME, ORG)
        assert item.VerifyingObserverIdentificationCodeSequence[0].CodeMeaning == "Łucja W."


def _findscu(setup: Setup, port: int, ae: str, keys: list[bytes], out: Path) -> list[Dataset]:
    out.mkdir(parents=True)
    args: list[bytes | str] = ["findscu", "-S", "-aec", ae, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run([*args, "127.0.0.1", str(port)], env=PEER_ENV, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


SERIES_KEYS = [b"QueryRetrieveLevel=SERIES", b"StudyInstanceUID=" + STUDY.encode(), b"SeriesInstanceUID"]


def test_findscu_sequence_keys(setup: Setup) -> None:
    """DCMTK findscu with `(gggg,eeee)[0].(gggg,eeee)=value` keys, as a user types them."""
    require_tool("findscu")
    found = _findscu(setup, setup.port, AGENT_AE, [*SERIES_KEYS, b"(0040,0275)[0].(0040,1001)=RP1",
                                                   b"(0040,0275)[0].(0040,0009)"], setup.work / "f1")
    assert [str(m.SeriesInstanceUID) for m in found] == [f"{ROOT}.1.1"]
    assert [(i.RequestedProcedureID, i.ScheduledProcedureStepID) for i in found[0].RequestAttributesSequence] == [
        ("RP1", "SPS1")]
    found = _findscu(setup, setup.port, AGENT_AE, [*SERIES_KEYS, b"(0040,0275)"], setup.work / "f2")
    assert len(found) == 5
    found = _findscu(setup, setup.port, AGENT_AE, [
        b"SpecificCharacterSet=ISO_IR 192", b"QueryRetrieveLevel=IMAGE", b"StudyInstanceUID=" + STUDY.encode(),
        f"SeriesInstanceUID={ROOT}.1.5".encode(), b"SOPInstanceUID",
        "(0040,a073)[0].(0040,a075)=Wałęsa*".encode(), b"(0040,a073)[0].(0040,a027)",
        b"(0040,a043)[0].(0008,0100)", b"(0040,a504)[0].(0040,db00)=2000"], setup.work / "f3")
    assert [str(m.SOPInstanceUID) for m in found] == [f"{ROOT}.1.5.1"]
    item = found[0].VerifyingObserverSequence[0]
    assert (str(item.VerifyingObserverName), item.VerifyingOrganization) == (NAME, ORG)
    assert found[0].ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert found[0].ContentTemplateSequence[0].TemplateIdentifier == "2000"


def test_dcmqrscp_does_not_match_sequences(setup: Setup) -> None:
    """The reason dcmqrscp is not the reference here: over the same files it returns every series for a
    Request Attributes Sequence item that only one series has, with the sequence empty or absent."""
    for tool in ("dcmqrscp", "findscu"):
        require_tool(tool)
    with dcmqrscp(setup.work / "reference", setup.files) as port:
        found = _findscu(setup, port, "QRSCP", [*SERIES_KEYS, b"(0040,0275)[0].(0040,1001)=RP1"],
                         setup.work / "dcmqrscp")
    assert len(found) == 5
    assert not any(m.get("RequestAttributesSequence") for m in found)


def test_the_agents_own_find_with_a_sequence_path(setup: Setup) -> None:
    """`dicom-agent find HOST PORT --aec AE -k Sequence[0].Key=value --json`, as a user of the agent's
    own SCU types it: the matching series, its item in the DICOM JSON model."""
    import json

    done = subprocess.run([sys.executable, "-m", "agent", "find", "127.0.0.1", str(setup.port), "--aec", AGENT_AE,
                           "--level", "SERIES", "-k", f"StudyInstanceUID={STUDY}", "-k", "SeriesInstanceUID",
                           "-k", "RequestAttributesSequence[0].ScheduledProcedureStepID=SPS3",
                           "-k", "RequestAttributesSequence[0].RequestedProcedureID", "--json"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = json.loads(done.stdout)
    assert out["status"] == "0000" and len(out["matches"]) == 1
    match = out["matches"][0]
    assert match["0020000E"]["Value"] == [f"{ROOT}.1.2"]
    (item,) = match["00400275"]["Value"]
    assert item["00401001"]["Value"] == ["RP3"] and item["00400009"]["Value"] == ["SPS3"]
