"""pytest fixtures for Realm Gateway end-to-end tests on the netns testbed.

Run as root with Debian's interpreter (python3-pytest):

    cd /work/main/testbed && /usr/bin/python3 -m pytest -q tests/

The session-scoped ``topo`` fixture runs ``topology.sh up`` into a fresh
temporary state directory and ``topology.sh down`` at the end of the session
(try/finally + atexit + SIGTERM handler), whatever the test outcome.

Environment knobs:
    RGW_TESTBED_STATE=/path  attach to an already running testbed (brought up
                             by hand with ``topology.sh up /path``); it is
                             neither created nor torn down by the tests.
    RGW_TESTBED_KEEP=1       do not tear down at the end (debugging); the state
                             dir is printed.  Bring it down by hand later.
    RGW_TESTBED_KEEP_LOGS=1  keep the state dir (logs) even if all tests pass.
                             (It is always kept when a test failed.)
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Iterable, Optional, Sequence, Union

import pytest

TESTBED_DIR = pathlib.Path(__file__).resolve().parent.parent
TOPOLOGY = TESTBED_DIR / "topology.sh"
NS_KEYS = ("cli", "rtr", "par", "res", "web", "gw", "ha", "hb")
PY = "/usr/bin/python3"

Cmd = Union[str, Sequence[str]]

_any_test_failed = False


class TestbedCommandError(subprocess.CalledProcessError):
    """CalledProcessError whose str() includes the captured output."""

    def __str__(self) -> str:  # pragma: no cover - formatting only
        base = super().__str__()
        return f"{base}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def read_env(path: Union[str, pathlib.Path]) -> dict:
    """Parse the shell-sourceable env file written by ``topology.sh up``."""
    env = {}
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for tok in shlex.split(line):
            if "=" in tok:
                k, v = tok.split("=", 1)
                env[k] = v
    return env


# Tiny socket clients executed *inside* a namespace (python3 -c SCRIPT args).
# They print one JSON object: status (ok/refused/timeout/unreachable/error),
# data (hex), local/peer addresses, and flags.
_TCP_CLIENT = r"""
import socket, sys, time, json, errno
dst, port, send_hex, src, sport, timeout, shut = sys.argv[1:8]
timeout = float(timeout); send = bytes.fromhex(send_hex)
r = {"status": None, "data": "", "local": None, "peer": None, "timed_out": False, "reset": False, "error": None}
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if src or sport:
        s.bind((src, int(sport or 0)))
    s.settimeout(timeout)
    s.connect((dst, int(port)))
except socket.timeout:
    r["status"] = "timeout"
except ConnectionRefusedError:
    r["status"] = "refused"
except OSError as e:
    r["status"] = "unreachable" if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
    r["error"] = str(e)
else:
    r["local"] = list(s.getsockname()); r["peer"] = list(s.getpeername())
    buf = b""
    try:
        if send:
            s.sendall(send)
        if shut == "1":
            s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while True:
            rem = deadline - time.monotonic()
            if rem <= 0:
                r["timed_out"] = True; break
            s.settimeout(rem)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                r["timed_out"] = True; break
            if not chunk:
                break
            buf += chunk
    except ConnectionResetError:
        r["reset"] = True
    except OSError as e:
        r["error"] = str(e)
    r["status"] = "ok"; r["data"] = buf.hex()
finally:
    s.close()
print(json.dumps(r))
"""

_UDP_CLIENT = r"""
import socket, sys, time, json, errno
dst, port, send_hex, src, sport, timeout, count = sys.argv[1:8]
timeout = float(timeout); send = bytes.fromhex(send_hex); count = int(count)
r = {"status": None, "data": "", "datagrams": [], "local": None, "error": None}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if src or sport:
        s.bind((src, int(sport or 0)))
    s.connect((dst, int(port)))   # connected: ICMP errors are reported
    r["local"] = list(s.getsockname())
    s.send(send)
    deadline = time.monotonic() + timeout
    while len(r["datagrams"]) < count:
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise socket.timeout()
        s.settimeout(rem)
        r["datagrams"].append(s.recv(65536).hex())
    r["status"] = "ok"
except socket.timeout:
    r["status"] = "ok" if r["datagrams"] else "timeout"
except ConnectionRefusedError:
    r["status"] = "refused"
except OSError as e:
    r["status"] = "unreachable" if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
    r["error"] = str(e)
finally:
    s.close()
r["data"] = "".join(r["datagrams"])
print(json.dumps(r))
"""


class Topology(dict):
    """The parsed env file plus helpers to run things inside the namespaces.

    Keys are the env variables (``topo["GW_WAN_IP"]``), also reachable as
    attributes (``topo.GW_WAN_IP``).  ``ns_key`` arguments are one of
    'cli', 'rtr', 'par', 'res', 'web', 'gw', 'ha', 'hb'.
    """

    def __init__(self, state_dir: Union[str, pathlib.Path], owned: bool = True):
        self.state_dir = pathlib.Path(state_dir)
        self.owned = owned
        self._procs: list = []
        self._lock = threading.Lock()
        self._torn_down = False
        super().__init__()

    # ---------------------------------------------------------------- env
    def load(self) -> "Topology":
        self.clear()
        self.update(read_env(self.state_dir / "env"))
        return self

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def ns(self, ns_key: str) -> str:
        """Namespace name for a key ('cli' -> 'rgw3fa2-cli')."""
        if ns_key not in NS_KEYS:
            raise ValueError(f"unknown namespace key {ns_key!r}; one of {NS_KEYS}")
        return self[f"NS_{ns_key.upper()}"]

    def _argv(self, ns_key: str, cmd: Cmd) -> list:
        if isinstance(cmd, str):
            cmd = ["/bin/sh", "-c", cmd]
        return ["ip", "netns", "exec", self.ns(ns_key), *map(str, cmd)]

    # ---------------------------------------------------------------- processes
    def run(self, ns_key: str, cmd: Cmd, timeout: float = 10, check: bool = True,
            input: Union[str, bytes, None] = None, text: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` (list, or str for /bin/sh -c) inside a namespace.

        Returns a CompletedProcess with .stdout/.stderr (str unless text=False).
        On timeout the whole process group is killed and
        subprocess.TimeoutExpired is raised.  check=True raises on non-zero
        exit (the exception message includes stdout/stderr).
        """
        argv = self._argv(ns_key, cmd)
        if text and isinstance(input, bytes):
            input = input.decode()
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            text=text, errors="replace" if text else None)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
        cp = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise TestbedCommandError(proc.returncode, argv, out, err)
        return cp

    def popen(self, ns_key: str, cmd: Cmd, **kwargs) -> subprocess.Popen:
        """Start a background process inside a namespace.

        It runs in its own session/process group, is tracked and killed (by
        PID / process group) at teardown.  By default stdout+stderr go to a
        log file in the state dir (``proc.logfile``); pass stdout=... to
        override.
        """
        argv = self._argv(ns_key, cmd)
        logfile = None
        if "stdout" not in kwargs:
            logdir = self.state_dir / "log"
            logdir.mkdir(parents=True, exist_ok=True)
            with self._lock:
                n = len(self._procs)
            logfile = logdir / f"popen-{n:03d}-{ns_key}.log"
            kwargs["stdout"] = open(logfile, "ab")
            kwargs.setdefault("stderr", subprocess.STDOUT)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs["start_new_session"] = True
        proc = subprocess.Popen(argv, **kwargs)
        proc.logfile = logfile
        with self._lock:
            self._procs.append(proc)
        return proc

    def read_log(self, proc: subprocess.Popen) -> str:
        lf = getattr(proc, "logfile", None)
        return pathlib.Path(lf).read_text(errors="replace") if lf else ""

    def stop(self, proc: subprocess.Popen, timeout: float = 3) -> Optional[int]:
        """Terminate a process started with popen() (its process group)."""
        _killpg(proc, signal.SIGTERM, timeout)
        f = proc.stdout
        if f is not None and not f.closed and getattr(proc, "logfile", None):
            f.close()
        return proc.returncode

    # ---------------------------------------------------------------- probes
    def tcp_probe(self, ns_key: str, dst: str, port: int, send: bytes = b"",
                  src: Optional[str] = None, src_port: Optional[int] = None,
                  timeout: float = 2, shutdown: bool = True) -> dict:
        """Connect from inside ``ns_key`` to dst:port, send ``send``, half-close
        (shutdown=True) and read until EOF or ``timeout`` (the connect gets its
        own ``timeout``).  Returns a dict: status ('ok', 'refused', 'timeout',
        'unreachable', 'error'), data (bytes), local, peer, timed_out, reset."""
        argv = [PY, "-c", _TCP_CLIENT, dst, str(port), send.hex(), src or "",
                str(src_port or ""), str(timeout), "1" if shutdown else "0"]
        cp = self.run(ns_key, argv, timeout=2 * timeout + 10, check=True)
        r = json.loads(cp.stdout.strip().splitlines()[-1])
        r["data"] = bytes.fromhex(r["data"])
        return r

    def tcp_exchange(self, ns_key: str, dst: str, port: int, send: bytes = b"",
                     src: Optional[str] = None, timeout: float = 2,
                     src_port: Optional[int] = None, shutdown: bool = True) -> Optional[bytes]:
        """Bytes received on a TCP connection, or None if it could not be
        established (refused / timeout / unreachable).  See tcp_probe()."""
        r = self.tcp_probe(ns_key, dst, port, send=send, src=src, src_port=src_port,
                           timeout=timeout, shutdown=shutdown)
        return r["data"] if r["status"] == "ok" else None

    def udp_probe(self, ns_key: str, dst: str, port: int, send: bytes = b"ping\n",
                  src: Optional[str] = None, src_port: Optional[int] = None,
                  timeout: float = 2, count: int = 1) -> dict:
        """Send one datagram from inside ``ns_key`` and wait up to ``timeout``
        for ``count`` replies.  Returns a dict: status ('ok', 'timeout',
        'refused', 'unreachable', 'error'), data (all replies concatenated,
        bytes), datagrams (list of bytes), local."""
        argv = [PY, "-c", _UDP_CLIENT, dst, str(port), send.hex(), src or "",
                str(src_port or ""), str(timeout), str(count)]
        cp = self.run(ns_key, argv, timeout=timeout + 10, check=True)
        r = json.loads(cp.stdout.strip().splitlines()[-1])
        r["data"] = bytes.fromhex(r["data"])
        r["datagrams"] = [bytes.fromhex(d) for d in r["datagrams"]]
        return r

    def udp_exchange(self, ns_key: str, dst: str, port: int, send: bytes = b"ping\n",
                     src: Optional[str] = None, timeout: float = 2,
                     src_port: Optional[int] = None) -> Optional[bytes]:
        """The first reply datagram, or None (timeout / ICMP error)."""
        r = self.udp_probe(ns_key, dst, port, send=send, src=src, src_port=src_port,
                           timeout=timeout, count=1)
        return r["datagrams"][0] if r["status"] == "ok" else None

    # ---------------------------------------------------------------- DNS
    def dig(self, ns_key: str, name: str, qtype: str = "A", server: Optional[str] = None,
            timeout: int = 2, tries: int = 1, short: bool = True,
            extra: Iterable[str] = ()) -> Union[list, str]:
        """dig from inside a namespace.  short=True returns the +short lines
        (list of str); short=False returns the full text output."""
        argv = ["dig", f"+time={timeout}", f"+tries={tries}"]
        if short:
            argv.append("+short")
        if server:
            argv.append(f"@{server}")
        argv += [name, qtype, *extra]
        cp = self.run(ns_key, argv, timeout=timeout * tries + 10, check=False)
        if short:
            return [line for line in cp.stdout.splitlines() if line and not line.startswith(";")]
        return cp.stdout

    def unbound_control(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """unbound-control against the resolver (unix socket, no keys), e.g.
        topo.unbound_control('flush_infra', 'all')."""
        return subprocess.run(["unbound-control", "-c", self["UNBOUND_CONF"], *args],
                              capture_output=True, text=True, timeout=10, check=check)

    # ---------------------------------------------------------------- topology.sh
    def topology(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([str(TOPOLOGY), *args], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise TestbedCommandError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp

    def check(self) -> subprocess.CompletedProcess:
        return self.topology("check", str(self.state_dir), check=False)

    def up(self) -> "Topology":
        self.topology("up", str(self.state_dir))
        return self.load()

    def kill_tracked(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        for p in procs:
            try:
                self.stop(p, timeout=2)
            except Exception as e:  # pragma: no cover
                print(f"testbed: could not stop PID {p.pid}: {e}", file=sys.stderr)

    def teardown(self) -> None:
        """Kill tracked processes and bring the topology down (idempotent)."""
        if self._torn_down:
            return
        self._torn_down = True
        self.kill_tracked()
        if not self.owned:
            return
        if os.environ.get("RGW_TESTBED_KEEP") == "1":
            print(f"\ntestbed: RGW_TESTBED_KEEP=1 - leaving it up; state dir {self.state_dir}\n"
                  f"         bring it down with: {TOPOLOGY} down {self.state_dir}", file=sys.stderr)
            return
        try:
            cp = self.topology("down", str(self.state_dir), timeout=60, check=False)
            if cp.returncode != 0:
                print(f"testbed: topology.sh down failed:\n{cp.stdout}\n{cp.stderr}", file=sys.stderr)
        finally:
            if _any_test_failed or os.environ.get("RGW_TESTBED_KEEP_LOGS") == "1":
                print(f"\ntestbed: logs kept in {self.state_dir}", file=sys.stderr)
            else:
                shutil.rmtree(self.state_dir, ignore_errors=True)


def _killpg(proc: subprocess.Popen, sig=signal.SIGKILL, timeout: float = 3) -> None:
    """Signal the process group led by proc (it was started with
    start_new_session=True, so pgid == pid), escalate to SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


# -------------------------------------------------------------------- hooks
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    global _any_test_failed
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        _any_test_failed = True


# -------------------------------------------------------------------- fixture
@pytest.fixture(scope="session")
def topo():
    """The running testbed (see Topology)."""
    if os.geteuid() != 0:
        pytest.fail("the netns testbed needs root: run the suite as root", pytrace=False)

    attach = os.environ.get("RGW_TESTBED_STATE")
    if attach:
        t = Topology(attach, owned=False)
        if not (t.state_dir / "env").exists():
            pytest.fail(f"RGW_TESTBED_STATE={attach}: no env file - run topology.sh up {attach}")
        t.load()
        try:
            yield t
        finally:
            t.teardown()
        return

    state = tempfile.mkdtemp(prefix="rgw-testbed-")
    t = Topology(state, owned=True)
    atexit.register(t.teardown)
    # make SIGTERM run finally/atexit (default action would skip them)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        try:
            t.up()
        except TestbedCommandError as e:
            pytest.fail(f"topology.sh up failed:\n{e.stdout}\n{e.stderr}", pytrace=False)
        yield t
    finally:
        t.teardown()
