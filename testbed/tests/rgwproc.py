"""Start, stop and query the `rgw` daemon inside the testbed's gateway namespace."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import shutil
import time
from contextlib import contextmanager

REPO = pathlib.Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "testbed" / "config" / "rgw.toml"
RGW64_FRAGMENT = REPO / "testbed" / "config" / "rgw64.toml"


def rgw_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RGW_BIN", REPO / "target" / "debug" / "rgw"))
    if not path.is_file():
        raise RuntimeError(f"rgw binary {path} not found: build it first (cargo build) or set RGW_BIN")
    return path


def config_text(state_dir: pathlib.Path, pool=None, tmax=None) -> str:
    """The shipped demo configuration with a per-run control socket and optional overrides."""
    text = SHIPPED_CONFIG.read_text()
    text = re.sub(r'(?m)^socket = .*$', f'socket = "{state_dir}/rgw.sock"', text)
    text = re.sub(r'(?m)^path = ".*bindings.log"', f'path = "{state_dir}/bindings.log"', text)
    if pool is not None:
        items = ", ".join(f'"{p}"' for p in pool)
        text = re.sub(r'(?m)^addresses = .*$', f"addresses = [{items}]", text)
    if tmax is not None:
        text = re.sub(r'(?m)^tmax = .*$', f'tmax = "{tmax}"', text)
    return text


class Rgw:
    """One rgw process in the gateway namespace, with its log and control socket."""

    def __init__(self, topo):
        self.topo = topo
        self.state = pathlib.Path(topo.state_dir) / "rgw"
        self.state.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.runs = 0
        self.config_path = self.state / "rgw.toml"

    @property
    def socket(self) -> pathlib.Path:
        return self.state / "rgw.sock"

    def start(self, text: str | None = None, wait: bool = True) -> None:
        if text is None:
            text = config_text(self.state)
        self.config_path.write_text(text)
        self.runs += 1
        self.log_path = self.state / f"rgw-{self.runs}.log"
        log = open(self.log_path, "ab")
        self.proc = self.topo.popen("gw", [str(rgw_binary()), "run", "--config", str(self.config_path)],
                                    stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rgw exited with {self.proc.returncode}:\n{self.log()}")
            if "rgw ready" in self.log() and self.socket.exists():
                # Listeners are spawned right after "ready"; give them a moment.
                time.sleep(0.2)
                return
            time.sleep(0.05)
        raise RuntimeError(f"rgw not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int | None:
        """Sends `sig` to rgw (by PID) and waits for it to exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def status(self) -> dict:
        cp = self.topo.run("gw", [str(rgw_binary()), "status", "--json", "--socket", str(self.socket)], timeout=10)
        return json.loads(cp.stdout)

    def counters(self) -> dict:
        return self.status()["counters"]

    def kernel_drops(self) -> dict:
        return self.status()["kernel_drops"]


@contextmanager
def rgw64_gateway(topo):
    """The testbed's IPv6 layer (topology.sh up6) and one rgw with the shipped
    configuration plus [rgw64] (and the ALG, on by default); both removed at
    the end. A layer left over by an interrupted run is rebuilt (down6 first)."""
    topo.topology("down6", str(topo.state_dir), check=False)
    topo.topology("up6", str(topo.state_dir))
    topo.load()
    r = Rgw(topo)
    try:
        r.start(config_text(r.state) + "\n" + RGW64_FRAGMENT.read_text())
        yield r
    finally:
        r.stop()
        topo.topology("down6", str(topo.state_dir), check=False)


def work_dir(topo, request, area: str) -> pathlib.Path:
    """A fresh directory for one test's files: <state dir>/<area>/<test id>."""
    d = pathlib.Path(topo.state_dir) / area / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d
