"""The agent process: builds the services a profile asks for and runs them in one nursery.

Invariants:
- Start-up order: data directory and database, crash recovery (stale temp files, expired leases),
  then the listener; READY=1 goes to systemd only once the listener is bound and recovery is done.
- SIGTERM/SIGINT cancel the root scope: every association ends with A-ABORT or A-RELEASE, queue
  workers give their claimed jobs back, and the process exits 0.
- SIGHUP re-reads the TLS certificate, key and CA files (`Agent.reload`); open associations keep
  the session they have, new handshakes use the new files. A file that cannot be used is logged and
  the previous certificate stays in use. It also re-reads `[security]` from the profile file (users,
  password file, access rules) for new associations; a profile that no longer parses changes nothing.
- Everything the `dicom-agent` process creates is owner/group only: its command line sets the umask
  to 0027 before anything else (agent/cli/__init__.py `main`); the store and database also set their
  modes explicitly, so an agent embedded in another process is safe whatever that process's umask.
"""

from __future__ import annotations

import errno
import logging
import signal
import sqlite3
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import trio

from agent import __version__, sdnotify
from agent.control import serve_control
from agent.net.connection import Timeouts
from agent.net.server import AcceptorPolicy, Listener, ServiceRegistry
from agent.security import AccessPolicy, Authenticator
from agent.security.audit_trail import AuditTrail
from agent.net.tls import TlsEvents, TlsServer, TlsSetupError
from agent.errors import AgentError, ProfileError
from agent.profile import EMBEDDED_SOURCE, MppsSettings, Profile, load_profile
from agent.services import verification
from agent.services import commitment
from agent.services.blocking import Blocking
from agent.services.commitment import (
    COMMIT_REPORT_JOB,
    COMMIT_REQUEST_JOB,
    CommitmentRequester,
    CommitmentSCP,
    route_pending_reports,
)
from agent.services.forward import STORE_JOB, StorePerformer, enqueue_forwards
from agent.services.print.scu import PRINT_JOB_KIND, PrintPerformer
from agent.services.print.service import PrintService, build_print_service, open_printer_driver
from drivers.base import AcquisitionDriver, PrinterDriver
from agent.workflow.device import open_device_driver, requester_settings
from agent.workflow.modality import ModalityWorkflow
from agent.services.maintenance import Maintenance
from agent.services.mpps import WorkflowServices, build_workflow_services
from agent.services.outbound import Outbound
from agent.services.query.move_jobs import MOVE_STORE_JOB, MoveStorePerformer
from agent.services.query.scp import QuerySCP
from agent.services.storage import StorageSCP
from agent.services.storage_classes import ALL_STORAGE_SOP_CLASSES
from agent.data_dir import DatabaseUnusable, prepare_data_dir
from agent.store.db import DB_FILENAME, open_database
from agent.store.commitment import CommitmentStore
from agent.store.instances import InstanceStore
from agent.store.mpps import MppsStore
from agent.store.procedures import ProcedureStore
from agent.store.queue import JobQueue
from agent.store.query import ensure_schema as ensure_query_schema
from agent.store.worklist import WorklistStore

log = logging.getLogger("agent")


def access_policy_of(p: Profile) -> AccessPolicy:
    """`[security]`'s access rules and required identities (none: every caller, every service)."""
    return AccessPolicy(p.security.access, p.security.require_identity) if p.security else AccessPolicy()


class ListenFailed(AgentError):
    """A listening port could not be opened: one line for the operator, not a traceback. A port in use
    may come free (an old instance still stopping): exit 69 (EX_UNAVAILABLE, a service manager may try
    again); any other reason (an address that is not ours, a privileged port) is the profile's: 78."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        in_use = exc.errno == errno.EADDRINUSE
        self.exit_status = 69 if in_use else 78
        super().__init__(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                         + (" (another program, or this agent already running?)" if in_use else ""))


async def _listen(nursery: trio.Nursery, serve: Any, host: str, port: int) -> list[trio.SocketListener]:
    try:
        return await nursery.start(serve, host, port)
    except OSError as exc:
        raise ListenFailed(host, port, exc) from None


def timeouts_of(profile: Profile) -> Timeouts:
    a = profile.agent
    return Timeouts(artim=a.artim_timeout, dimse=a.dimse_timeout, idle=a.idle_timeout, connect=a.connect_timeout)


@dataclass
class Agent:
    profile: Profile
    registry: ServiceRegistry = field(default_factory=ServiceRegistry)
    listener: Listener | None = None
    bound_ports: list[int] = field(default_factory=list)  # plain TCP first, then TLS
    tls_server: TlsServer | None = None  # `[tls]`: its events are where TLS outcomes are reported
    tls_ports: list[int] = field(default_factory=list)
    blocking: Blocking = field(default_factory=Blocking)
    db: sqlite3.Connection | None = None
    store: InstanceStore | None = None
    storage_scp: StorageSCP | None = None
    queue: JobQueue | None = None
    outbound: Outbound | None = None
    commitments: CommitmentStore | None = None
    commit_requester: CommitmentRequester | None = None
    commit_scp: CommitmentSCP | None = None
    worklist_store: WorklistStore | None = None  # MWL cache, local items, performed steps
    mpps_store: MppsStore | None = None
    workflow: WorkflowServices | None = None  # MWL SCU/SCP, MPPS SCU/SCP (agent.services.mpps)
    printer: PrinterDriver | None = None  # `[print] serve`: the printer behind the Print SCP
    print_service: PrintService | None = None
    device_driver: AcquisitionDriver | None = None  # `[device]`: opened at start-up unless given (tests)
    procedures: ProcedureStore | None = None
    modality: ModalityWorkflow | None = None  # the modality workflow consuming device_driver's events
    query_scp: QuerySCP | None = None  # `[query]`: Query/Retrieve SCP over the instance index
    audit: AuditTrail | None = None  # `[audit]`: audit messages (PS3.15 A.5), hooked in by _hook_audit

    def open_persistence(self) -> None:
        """Database, instance store and crash recovery; blocking, runs before the listener binds."""
        p = self.profile
        prepare_data_dir(p.agent.data_dir)  # or DataDirUnusable: one line naming the folder, exit 78
        db_path = p.agent.data_dir / DB_FILENAME
        try:
            self.db = open_database(db_path)
            self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the schema pages
        except sqlite3.Error as exc:
            raise DatabaseUnusable(db_path, str(exc)) from None  # exit 73: a restart cannot fix it
        s = p.storage
        self.store = InstanceStore(
            p.agent.data_dir, self.db,
            free_space_floor=s.free_space_floor if s else 0,
            duplicate=s.duplicate if s else "replace",
        )
        self.queue = JobQueue(self.db)
        recovered = self.queue.recover()
        if recovered:
            log.warning("start-up recovery: %d interrupted job(s) returned to the queue", recovered)
        self.commitments = CommitmentStore(self.db)
        self.worklist_store = WorklistStore(self.db)
        self.mpps_store = MppsStore(self.db, lifetime=(p.mpps or MppsSettings()).instance_lifetime)
        if p.commitment is not None:
            route_pending_reports(self.commitments, self.queue, p.peers, p.commitment)
        if p.print is not None and p.print.serve:
            self.printer = open_printer_driver(p)  # a bad [print.options] value: ProfileError, exit 78
        if p.device is not None:
            self.procedures = ProcedureStore(self.db)
            if self.device_driver is None:  # a bad [device.options] value: ProfileError, exit 78
                self.device_driver = open_device_driver(p)
        if p.query is not None:  # study/series summaries for Q/R (built once for an older database)
            ensure_query_schema(self.db)
        # Instances a power cut un-indexed are indexed again with the Storage SCP's hook (forwarding).
        forwards = enqueue_forwards(self.queue, s.forward_to) if s is not None and s.forward_to else None
        report = self.store.startup_cleanup(on_commit=forwards)
        if report.temp_files_removed or report.rows_removed or report.orphan_files_removed:
            log.warning("start-up recovery: %s", report)

    def build(self) -> None:
        p = self.profile
        assert self.store is not None and self.queue is not None
        verification.register(self.registry)
        self.outbound = Outbound(
            p.agent.ae_title, p.peers, self.queue, self.blocking, timeouts_of(p),
            max_pdu_receive=p.agent.max_pdu_length,
        )
        self.outbound.performers[STORE_JOB] = StorePerformer(self.store, self.blocking)
        # Print SCU: `print` jobs (queued by `dicom-agent print` or a workflow) to any printer peer.
        self.outbound.performers[PRINT_JOB_KIND] = PrintPerformer(p.agent.data_dir)
        self._build_commitment()
        assert self.db is not None and self.worklist_store is not None and self.mpps_store is not None
        self.workflow = build_workflow_services(
            p, self.registry, self.outbound, self.queue, self.blocking, self.db, self.worklist_store,
            self.mpps_store, timeouts_of(p),
        )
        if p.device is not None:
            assert self.procedures is not None
            w = p.worklist
            self.modality = ModalityWorkflow(
                p.device, self.device_driver, self.db, self.blocking, self.queue, self.store, self.procedures,
                self.worklist_store, p.agent.data_dir, p.agent.ae_title, peers=p.peers,
                mpps_scu=self.workflow.mpps_scu, worklist_service=self.workflow.worklist,
                worklist_folder=w.folder if w else None, worklist_modality=w.modality if w else None,
                station_ae=w.station_ae if w else p.agent.ae_title, wake=self.outbound.wake,
            )
            if p.device.priors_from is not None:  # priors: C-MOVE to us, or C-GET into the store directly
                from agent.workflow.priors import PRIORS_JOB, PriorsPerformer

                self.outbound.performers[PRIORS_JOB] = PriorsPerformer(
                    p.agent.ae_title, self.store, self.blocking, StorageSCP(self.store, self.blocking).handle)
        if self.printer is not None:
            assert p.print is not None
            self.print_service = build_print_service(p.print, p.agent.data_dir, self.db, self.blocking,
                                                     self.registry, driver=self.printer)
        if p.storage is not None:
            self.storage_scp = StorageSCP(self.store, self.blocking)
            if p.storage.forward_to:
                outbound, destinations = self.outbound, p.storage.forward_to
                self.storage_scp.on_commit = enqueue_forwards(self.queue, destinations)

                def wake_forwarders(stored: object) -> None:
                    for dest in destinations:
                        outbound.wake(dest)

                self.storage_scp.after_commit = wake_forwarders
            self.storage_scp.register(
                self.registry,
                sop_classes=ALL_STORAGE_SOP_CLASSES if p.storage.accept_all else p.storage.sop_classes,
                transfer_syntaxes=p.storage.transfer_syntaxes,
                accept_compressed=p.storage.accept_compressed,
            )
        if p.query is not None:  # after [storage]: C-GET adds the SCP role to its storage contexts
            assert self.db is not None
            self.query_scp = QuerySCP(p.query, self.db, self.blocking, self.queue, p.peers, p.agent.data_dir,
                                      wake=self.outbound.wake)
            self.query_scp.register(self.registry)
            self.outbound.performers[MOVE_STORE_JOB] = MoveStorePerformer(StorePerformer(self.store, self.blocking))
        self.listener = Listener(
            AcceptorPolicy(
                ae_title=p.agent.ae_title,
                called_ae_check=p.agent.called_ae_check,
                allowed_calling_aes=tuple(p.agent.allowed_calling_aes),
                access=access_policy_of(p),
                users=Authenticator(p.security.users if p.security else {}),
                max_pdu_receive=p.agent.max_pdu_length,
                timeouts=timeouts_of(p),
                max_associations=p.agent.max_associations,
                max_pending_connections=p.agent.max_pending_connections,
                max_pending_per_address=p.agent.max_pending_per_address,
            ),
            self.registry,
        )
        if self.print_service is not None:  # Printer N-EVENT-REPORTs reach a print association from its start
            self.listener.on_association = self.print_service.scp.association_started
        if p.tls is not None:
            try:  # a certificate, key or CA that cannot be used stops the start-up (exit 78)
                self.tls_server = TlsServer(p.tls)
            except TlsSetupError as exc:
                raise ProfileError(p.source, exc.key, f"usable TLS files: {exc}") from None
        if p.audit is not None:
            self._hook_audit()

    def _hook_audit(self) -> None:
        """`[audit]`: each place an audited event happens calls one AuditTrail method."""
        p = self.profile
        assert p.audit is not None and self.queue is not None and self.listener is not None
        trail = self.audit = AuditTrail(p.audit, p.agent.ae_title, self.queue, self.blocking, store=self.store)
        performers = self.outbound.performers if self.outbound is not None else {}
        forward, move = performers.get(STORE_JOB), performers.get(MOVE_STORE_JOB)
        if isinstance(forward, StorePerformer):  # what we send: forwarding, C-MOVE sub-operations
            forward.on_sent = trail.instance_sent
        if isinstance(move, MoveStorePerformer):
            move.forward.on_sent = trail.instance_sent
        self.listener.on_security_event = trail.security_event
        self.listener.on_association_end = trail.association_ended
        if self.storage_scp is not None:
            self.storage_scp.on_stored = trail.instance_stored
        if self.query_scp is not None:
            self.query_scp.on_query = trail.query_received
        if self.workflow is not None and self.workflow.worklist is not None:
            self.workflow.worklist.on_query = trail.query_received
            self.workflow.worklist.on_order_read = trail.order_read
        if self.workflow is not None and self.workflow.mpps_scp is not None:
            self.workflow.mpps_scp.on_record = trail.procedure_recorded
        if self.tls_server is not None:
            self.tls_server.events.failed.append(trail.tls_failed)
        if self.outbound is not None:  # handshakes of the associations the queue requests
            self.outbound.tls_events = TlsEvents(failed=[trail.tls_failed])

    def reload(self) -> None:
        """SIGHUP: re-read the TLS files and `[security]` (module docstring)."""
        if self.tls_server is not None:
            self.tls_server.reload()
        self.reload_security()
        if self.listener is not None:  # what the reload replaced was frozen with the rest at start
            from agent.net.server import refreeze

            refreeze()

    def reload_security(self) -> None:
        """Users (and the password file) and access rules, read again from the profile file. A profile
        that no longer parses keeps the policy in use (logged); established associations keep what
        they were admitted with."""
        if self.listener is None or self.profile.source == EMBEDDED_SOURCE:
            return
        try:
            fresh = load_profile(self.profile.source)
        except ProfileError as exc:
            log.error("SIGHUP: [security] not reloaded, the profile does not parse: %s", exc)
            return
        self.listener.policy = replace(
            self.listener.policy, allowed_calling_aes=tuple(fresh.agent.allowed_calling_aes),
            access=access_policy_of(fresh), users=Authenticator(fresh.security.users if fresh.security else {}),
        )
        sec = fresh.security
        log.info("SIGHUP: [security] reloaded: %d user(s), %d access rule(s)",
                 len(sec.users) if sec else 0, len(sec.access) if sec else 0)

    def _build_commitment(self) -> None:
        """Storage Commitment: requester (`[storage] commit_with`) and/or SCP (`[commitment]`)."""
        p, outbound = self.profile, self.outbound
        assert self.store is not None and self.queue is not None and self.commitments is not None and outbound
        s = requester_settings(p)  # [storage], or the [device] commit_with's settings
        if s is not None and s.commit_with is not None:
            self.commit_requester = CommitmentRequester(
                s.commit_with, s, self.store, self.commitments, self.queue, self.blocking,
                wake=outbound.wake, report_wait=s.commit_report_wait,
            )
            outbound.performers[COMMIT_REQUEST_JOB] = self.commit_requester
        if p.commitment is not None:
            self.commit_scp = CommitmentSCP(
                p.commitment, self.store, self.commitments, self.queue, self.blocking, p.peers, wake=outbound.wake,
            )
            outbound.performers[COMMIT_REPORT_JOB] = self.commit_scp
        commitment.register(self.registry, self.commit_requester, self.commit_scp)

    async def run(self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        p = self.profile
        await trio.to_thread.run_sync(self.open_persistence)
        self.build()
        assert self.listener is not None
        async with trio.open_nursery() as nursery:
            if self.audit is not None:  # first in, last out: Application Start and Stop frame everything
                await nursery.start(self.audit.run)
            assert self.outbound is not None
            await nursery.start(self.outbound.run)
            if self.commit_requester is not None:
                await nursery.start(self.commit_requester.run)
            assert self.workflow is not None and self.mpps_store is not None
            if self.workflow.worklist is not None and self.workflow.worklist.source is not None:
                await nursery.start(self.workflow.worklist.run_scu)
            s, w = requester_settings(p), p.worklist
            nursery.start_soon(Maintenance(
                self.blocking, self.queue, self.commitments, self.worklist_store, w.folder if w else None,
                self.mpps_store, procedures=self.procedures,
                commitment_requested=s is not None and s.commit_with is not None).run)
            if self.print_service is not None:  # held and interrupted print jobs resume before we listen
                await nursery.start(self.print_service.run)
            if self.query_scp is not None:  # index columns a newer version added, for earlier instances
                nursery.start_soon(self.query_scp.backfill)
            if self.modality is not None:  # unfinished procedures resume, then device events are consumed
                await nursery.start(self.modality.run)
            await nursery.start(serve_control, self)  # what `dicom-agent status` asks (agent/control.py)
            listeners = []
            if p.tls is None or p.tls.plain_listener:
                listeners = await _listen(nursery, self.listener.serve_tcp, p.agent.bind, p.agent.port)
            if p.tls is not None:
                tls_listeners = await _listen(
                    nursery, partial(self.listener.serve_tcp, tls=self.tls_server), p.agent.bind, p.tls.port
                )
                self.tls_ports = [l.socket.getsockname()[1] for l in tls_listeners]
                listeners += tls_listeners
            self.bound_ports = [l.socket.getsockname()[1] for l in listeners]
            log.info(
                "dicom-agent %s ready: AE %s on port %s, profile %s",
                __version__, p.agent.ae_title, ",".join(map(str, sorted(set(self.bound_ports)))), p.source,
            )
            sdnotify.ready(f"listening on {self.bound_ports[0]}")
            nursery.start_soon(self._watchdog)
            nursery.start_soon(self._report_status)
            task_status.started(self.bound_ports)

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            sdnotify.watchdog()
            await trio.sleep(interval)

    def status_line(self) -> str:
        """One line for systemd's STATUS=: associations, instances received, queue depth per peer."""
        assert self.queue is not None
        parts = [f"{self.listener.active if self.listener else 0} associations"]
        if self.storage_scp is not None:
            parts.append(f"{self.storage_scp.received} received")
        for dest, st in sorted(self.queue.stats().items()):
            parts.append(f"{dest}: {st.pending + st.claimed} queued, {st.dead} dead")
        return "; ".join(parts)

    async def _report_status(self) -> None:
        if not sdnotify.enabled():
            return
        while True:
            sdnotify.status(await self.blocking.run(self.status_line))
            await trio.sleep(10)


async def run_until_signalled(agent: Agent) -> None:
    """Run the agent until SIGTERM or SIGINT, then stop gracefully; SIGHUP reloads (Agent.reload)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)

            async def wait_signal() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP received: reloading")
                        agent.reload()
                        continue
                    log.info("%s received: stopping", signal.Signals(signum).name)
                    sdnotify.stopping()
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(wait_signal)
