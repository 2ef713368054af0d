"""The agent's control socket: where `dicom-agent status` asks the running agent what it is doing now.

Where: `$RUNTIME_DIRECTORY/control.sock` when systemd gives the service a runtime folder
(`RuntimeDirectory=dicom-agent/%i`, so /run/dicom-agent/NAME/control.sock), else
`<data_dir>/run/control.sock`. `status_socket_candidates` lists both for a client that only has the
profile (docs/status.md).

Who may ask: the socket is mode 0660 in a folder of mode 0750, so the agent's user and the members of
its group only (the group the administrators are put in). Nothing is accepted from the network.

Protocol, one exchange per connection: the client sends one line of JSON, `{"request": "status"}`
(at most 4096 bytes, within 5 seconds); the agent answers one line of JSON, the status document
(agent/status.py, schema `dicom-agent.status/1`), and closes. Anything else gets
`{"error": "<why>"}` and the connection is closed. At most 8 clients are served at once; more wait
in the listen backlog.

Invariants:
- The socket is removed when the agent stops; a stale one (no agent answering: connection refused) is
  replaced at start-up; one that answers belongs to another agent on the same data folder, and this
  agent then runs without a control socket and says so (it never steals a live agent's socket).
- A client cannot slow the agent down: its request has a deadline, the stored half of the document is
  read in a worker thread on the socket's own database connection, the live half without awaiting.
- Failing to open the control socket (no permission, a database error) or failing later is logged and the
  agent runs on: the live view is a convenience, never a reason not to serve DICOM.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.profile import Profile

log = logging.getLogger("agent.control")

SOCKET_NAME = "control.sock"
SOCKET_MODE = 0o660
MAX_REQUEST = 4096
REQUEST_DEADLINE = 5.0
MAX_CLIENTS = 8
#: Where a systemd install puts the runtime folders (the unit's RuntimeDirectory=dicom-agent/%i).
SYSTEMD_RUNTIME_ROOT = Path("/run/dicom-agent")


class ControlError(AgentError):
    """The control socket exists but could not be asked (permission, a timeout, a bad answer)."""


def socket_path(data_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Where this agent binds its control socket."""
    runtime = environ.get("RUNTIME_DIRECTORY", "")
    if runtime:
        return Path(runtime.split(":")[0]) / SOCKET_NAME  # several folders are ':'-separated: the first
    return data_dir / "run" / SOCKET_NAME


def status_socket_candidates(profile: Profile) -> list[Path]:
    """Where a client looks, in order: the data folder's, then systemd's for a profile installed as
    /etc/dicom-agent/NAME.toml (the unit runs it with RUNTIME_DIRECTORY=/run/dicom-agent/NAME)."""
    return [profile.agent.data_dir / "run" / SOCKET_NAME,
            SYSTEMD_RUNTIME_ROOT / Path(str(profile.source)).stem / SOCKET_NAME]


@contextlib.contextmanager
def addressable(path: Path) -> Iterator[str]:
    """An AF_UNIX address for `path`. Such addresses hold at most 107 bytes; a longer path (a deep data
    folder) is reached through a descriptor of its folder, /proc/self/fd/N/NAME (Linux)."""
    if len(os.fsencode(str(path))) <= 100:
        yield str(path)
        return
    try:
        fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield str(path)  # the folder is missing: the caller's connect/bind reports it
        return
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- client


def ask(path: Path, request: str = "status", *, timeout: float = 10.0) -> dict[str, Any] | None:
    """Ask the agent at `path`; its answer, or None when no agent listens there (no socket, or a stale
    one). ControlError when a socket answers badly or cannot be used (permission denied)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            with addressable(path) as address:
                s.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except PermissionError:
            raise ControlError(f"permission denied on {path} or its folder: run status as the agent's user "
                               f"or a member of its group") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            s.sendall(json.dumps({"request": request}).encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            raise ControlError(f"the agent at {path} did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from None
    finally:
        s.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{path} answered something that is not a JSON object")
    if "error" in answer:
        raise ControlError(f"the agent at {path} refused: {answer['error']}")
    return answer


# ---------------------------------------------------------------------------------------- server


def _claim(path: Path) -> bool:
    """Make `path` free for our socket; False if a live agent already answers on it."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return True
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        with addressable(path) as address:
            probe.connect(address)
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # stale: its agent died without removing it
        return True
    except OSError:
        return False  # it exists and we cannot tell: leave it alone
    finally:
        probe.close()
    return False


async def serve_control(agent: Agent, *, task_status: trio.TaskStatus[Path | None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the control socket for `agent` until cancelled; task_status gets the socket's path (None
    when the agent runs without one, see the module docstring)."""
    from agent.status import StoredStatus, document, live_status
    from agent.store.db import DB_FILENAME, make_private_dirs, open_database

    started_at = time.time()
    p = agent.profile
    path = socket_path(p.agent.data_dir)
    limiter = trio.CapacityLimiter(1)  # one thread for the socket's own database connection

    def prepare() -> StoredStatus | None:
        make_private_dirs(path.parent)
        mode = stat.S_IMODE(path.parent.stat().st_mode)
        if mode & 0o007:  # a folder made earlier by someone else: others get nothing near the socket
            os.chmod(path.parent, mode & 0o770)
        if not _claim(path):
            log.error("control socket %s: another agent answers there (same data_dir?); "
                      "running without a control socket", path)
            return None
        return StoredStatus(p, open_database(p.agent.data_dir / DB_FILENAME))

    try:
        reader = await trio.to_thread.run_sync(prepare, limiter=limiter)
        if reader is None:
            task_status.started(None)
            return
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with addressable(path) as address:
                await sock.bind(address)
            os.chmod(path, SOCKET_MODE)  # before listen(): nobody can connect before it is right
            sock.listen(MAX_CLIENTS * 2)
        except BaseException:
            sock.close()
            raise
    except (OSError, sqlite3.Error) as exc:
        log.error("control socket %s cannot be opened: %s; `dicom-agent status` will read the database",
                  path, getattr(exc, "strerror", None) or exc)
        task_status.started(None)
        return

    bound = path.lstat().st_ino

    async def snapshot() -> dict[str, Any]:
        stored = await trio.to_thread.run_sync(reader.read, limiter=limiter)
        return document("agent", live_status(agent, started_at), stored)

    clients = trio.Semaphore(MAX_CLIENTS)  # released by the client's task, so not a CapacityLimiter
    listener = trio.SocketListener(sock)
    log.info("control socket: %s", path)
    try:
        async with listener, trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                await clients.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:  # EMFILE and friends: the DICOM side matters more; breathe, go on
                    clients.release()
                    log.warning("control socket: accept failed: %s", exc)
                    await trio.sleep(0.5)
                    continue
                except BaseException:
                    clients.release()
                    raise
                nursery.start_soon(_serve_client, stream, snapshot, clients)
    except Exception:  # a bug here must not take the agent down (module docstring)
        log.exception("control socket %s failed; `dicom-agent status` will read the database", path)
    finally:
        # Remove our socket only: a successor that replaced it keeps its own.
        try:
            if path.lstat().st_ino == bound:
                path.unlink()
        except OSError:
            pass
        reader.db.close()


async def _serve_client(stream: trio.SocketStream, snapshot: Any, clients: trio.Semaphore) -> None:
    try:
        async with stream:
            answer: dict[str, Any]
            with trio.move_on_after(REQUEST_DEADLINE) as scope:
                request = await _read_line(stream)
            if scope.cancelled_caught:
                answer = {"error": f"no request within {REQUEST_DEADLINE:g} s"}
            elif request is None:
                answer = {"error": f"a request is one line of JSON of at most {MAX_REQUEST} bytes"}
            else:
                answer = await _answer(request, snapshot)
            with trio.move_on_after(REQUEST_DEADLINE):
                await stream.send_all(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away: nothing to tell it
    finally:
        clients.release()


async def _read_line(stream: trio.SocketStream) -> bytes | None:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            return None
    return data.split(b"\n", 1)[0]


async def _answer(line: bytes, snapshot: Any) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except ValueError:
        return {"error": 'the request is not JSON; send {"request": "status"}'}
    if not isinstance(request, dict) or request.get("request") != "status":
        return {"error": 'unknown request; the only one is {"request": "status"}'}
    try:
        result: dict[str, Any] = await snapshot()
        return result
    except Exception as exc:  # a database error must not end the control socket
        log.warning("control socket: status failed: %s", exc)
        return {"error": f"status failed: {exc}"}
