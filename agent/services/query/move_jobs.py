"""C-MOVE sub-operations as durable queue jobs of their own kind, `move-store`.

Invariants:
- A `move-store` job is a C-STORE of one locally stored instance to the move destination, carrying
  the Move Originator AE Title and Message ID of the C-MOVE that queued it (PS3.7 9.3.1.1: the C-STORE
  sub-operation names the C-MOVE it serves).
- The kind is claimed one job at a time (it is not a batch kind of the outbound worker), so at most
  one sub-operation of a destination is in flight; a C-CANCEL can then drop every other one from the
  queue before it is sent. The price is one claim transaction per instance.
- Failures are judged as for forwarding: a missing file or an unusable context is permanent (dead at
  once), a peer that cannot be reached or answers A7xx is retried with the peer's backoff.
- A C-STORE answered with a warning (any Bxxx, PS3.4 C.4.2.3.1) is delivered: the job completes with
  that warning in its row, and the C-MOVE counts it as a warning sub-operation, not a completed one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.dimse.status import StatusCategory, category, describe
from agent.net.connection import DicomConnection
from agent.services.forward import StorePerformer
from agent.services.outbound import BadPayload, JobFailed, check_status, payload_str
from agent.services.storage_scu import StoreFailed, send_file
from agent.store.queue import Job
from agent.ul.negotiation import ProposedContext

MOVE_STORE_JOB = "move-store"


def move_payload(uid: str, sop_class: str, ts: str, study: str, originator_ae: str, message_id: int) -> dict[str, object]:
    return {"uid": uid, "sop_class": sop_class, "ts": ts, "study": study,
            "originator_ae": originator_ae, "originator_id": message_id}


@dataclass
class MoveStorePerformer:
    forward: StorePerformer  # its presentation-context choice, shared

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        return self.forward.contexts(job)

    async def perform(self, conn: DicomConnection, job: Job) -> str | None:
        uid = payload_str(job, "uid")
        originator = (payload_str(job, "originator_ae"), job.payload.get("originator_id"))
        if not isinstance(originator[1], int) or not 0 <= originator[1] <= 0xFFFF:
            raise BadPayload(job, f"originator_id must be a message id, got {originator[1]!r:.40}")
        item = self.forward.item_of(job)
        try:
            reply = await send_file(conn, item, move_originator=(originator[0], originator[1]))
        except StoreFailed as exc:
            raise JobFailed(str(exc), permanent=True) from exc
        check_status(reply.status, f"C-STORE of {uid} (C-MOVE sub-operation)")
        if self.forward.on_sent is not None:  # the audit trail's hook, shared with forwarding
            self.forward.on_sent(conn, uid)
        if category(reply.status) is StatusCategory.WARNING:
            return f"{int(reply.status):04X} {describe(int(reply.status))}"
        return None


__all__ = ["MOVE_STORE_JOB", "MoveStorePerformer", "move_payload"]
