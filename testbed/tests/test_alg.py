"""End-to-end tests of the gateway's application layer gateways (issue 3):
FTP, SIP and RTSP through the gateway in both directions with real programs
on both ends, plus ICMP errors and the absence of kernel conntrack helpers.

Peers (Debian packages, installed by install-deps.sh):
  FTP   pyftpdlib (peers/ftp_server.py) <- lftp (PORT/PASV) and curl (EPRT/EPSV)
  SIP   sipp UAC/UAS with RTP both ways (peers/sip/*.xml, peers/rtp_pcap.py),
        media counted with tcpdump at the receiving end
  RTSP  GStreamer RTSP server (peers/rtsp_server.py) <- ffmpeg over UDP
  ICMP  traceroute -U / -I
The private servers are reached by name through the real resolver
(<service>.hosta.gwa.demo, services ftp/sip/siptcp/rtsp in config/rgw.toml).
Loss and reordering come from testbed/tools netem-lite in the router.

Cases that need no ALG (FTP passive outgoing, active incoming, outgoing
RTSP thanks to ffmpeg's NAT punch packets, traceroute from hosta) pass on
plain NAT; the others need the ALG's rewrites and pinholes.
RGW_ALG_OFF=1 runs the same tests against rgw with `[alg] enabled = false`
(a control experiment: the rows that need the ALG must then fail).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import time

import pytest

from rgwproc import REPO, Rgw, config_text

GW = "198.51.100.2"
POOL = ipaddress.ip_network("198.51.100.16/28")
HA_IP = "192.168.0.101"
WEB_IP = "203.0.113.80"
PEERS = REPO / "testbed" / "peers"
PY = "/usr/bin/python3"

FTP_FILES = 20
SIP_CALLS = 10
RTP_PER_CALL = 25          # packets in the generated rtp.pcap (0.5 s at 20 ms)
PASV_PORTS = "30000-30049"


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def rgw(topo):
    r = Rgw(topo)
    text = config_text(r.state)
    if os.environ.get("RGW_ALG_OFF") == "1":
        # Control experiment: the same tests against the gateway without its ALG.
        assert "[alg]" not in text, "the shipped configuration has an [alg] section: adapt RGW_ALG_OFF"
        text += "\n[alg]\nenabled = false\n"
    r.start(text)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def fresh(rgw, topo):
    if not rgw.alive():
        rgw.start()
    topo.unbound_control("flush_infra", "all", check=False)
    return rgw


@pytest.fixture
def work(topo, request):
    """A fresh directory for this test's data under the run's state dir."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    d = pathlib.Path(topo.state_dir) / "alg" / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def resolve(topo, name: str) -> str:
    """The pool address the public client gets for name through unbound."""
    ans = topo.dig("cli", name, server=topo.RES_IP, timeout=3, tries=2)
    assert ans, f"no answer for {name} through the resolver"
    addr = ans[-1]
    assert ipaddress.ip_address(addr) in POOL, f"{name} -> {addr} is not a pool address"
    return addr


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def listening(topo, ns: str, proto: str, port: int) -> bool:
    flag = "-u" if proto == "udp" else "-t"
    out = topo.run(ns, ["ss", "-Hln", flag, f"sport = :{port}"], check=False).stdout
    return bool(out.strip())


def start_logged(topo, ns: str, cmd, ready: str, timeout: float = 15):
    """popen() a server and wait for its readiness line ("<ready> ... pid=<pid>")
    in its log. `ip netns exec` execs the command, so the PID is the server's."""
    proc = topo.popen(ns, cmd)
    ready = re.compile(re.escape(ready) + r".* pid=" + str(proc.pid) + r"$", re.M)

    def ok():
        if proc.poll() is not None:
            raise AssertionError(f"{cmd[0:3]} exited with {proc.returncode}:\n{topo.read_log(proc)}")
        return bool(ready.search(topo.read_log(proc)))

    wait_for(ok, timeout, f"{ready!r} from {cmd}")
    proc.ready_line = ready
    return proc


def own_log(topo, proc) -> str:
    """The process's output from its readiness line on (a log file may hold
    earlier runs when the testbed is reused with RGW_TESTBED_STATE)."""
    log = topo.read_log(proc)
    m = None
    for m in proc.ready_line.finditer(log):
        pass
    return log[m.start():] if m else log


def alg_rewrites(rgw) -> int:
    st = rgw.status()
    assert "alg" in st, ("`rgw status --json` has no 'alg' section: the ALG is not wired into the "
                         f"daemon yet (keys: {sorted(st)})")
    assert isinstance(st["alg"], dict) and "rewrites" in st["alg"], \
        f"`rgw status --json` alg section has no 'rewrites' counter: {st['alg']}"
    return int(st["alg"]["rewrites"])


def sha256_tree(root: pathlib.Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_files(root: pathlib.Path, seed: int, n: int = FTP_FILES) -> dict:
    """n files of varied sizes (empty, one byte, around one segment, up to
    256 KiB), reproducible from seed; returns their checksums."""
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    fixed = [0, 1, 1447, 1448, 1449, 65536]
    for i in range(n):
        size = fixed[i] if i < len(fixed) else rnd.randint(2, 256 * 1024)
        (root / f"f{i:02d}.bin").write_bytes(rnd.randbytes(size))
    return sha256_tree(root)


# ------------------------------------------------------------------ netem-lite


def netem_bin() -> pathlib.Path:
    env = os.environ.get("NETEM_LITE_BIN")
    if env:
        return pathlib.Path(env)
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "netem-lite"
        if p.is_file():
            return p
    cp = subprocess.run(["cargo", "build", "-p", "rgw-testbed-tools"], cwd=REPO, capture_output=True,
                        text=True, timeout=900)
    assert cp.returncode == 0, f"cannot build netem-lite:\n{cp.stderr[-3000:]}"
    return REPO / "target" / "debug" / "netem-lite"


class Netem:
    """netem-lite in the router: 5 % loss and 10 % reordering (10 ms) on every
    TCP packet it forwards, both directions (public segment <-> gateway)."""

    def __init__(self, topo, seed: int, duration: int = 300):
        self.topo = topo
        self.proc = topo.popen("rtr", [str(netem_bin()), "--loss", "5", "--reorder", "10", "--reorder-gap", "10",
                                       "-p", "tcp", "--seed", str(seed), "--duration", str(duration), "--json"])
        # it prints nothing until it exits: wait for its rule instead
        wait_for(lambda: "netem-lite" in topo.run("rtr", ["iptables-nft", "-t", "mangle", "-S", "FORWARD"],
                                                  check=False).stdout or self.proc.poll() is not None,
                 10, "netem-lite's rule in the router")
        assert self.proc.poll() is None, f"netem-lite exited:\n{topo.read_log(self.proc)}"

    def stop(self) -> dict:
        self.topo.stop(self.proc, timeout=10)
        log = self.topo.read_log(self.proc)
        for line in reversed(log.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"netem-lite printed no JSON counters:\n{log}")


def assert_impaired(counters: dict):
    """The impairment really happened (else the loss test proves nothing)."""
    dropped = counters.get("dropped", 0)
    reordered = counters.get("reordered", 0)
    assert dropped > 0 and reordered > 0, f"netem-lite neither dropped nor reordered: {counters}"


# ------------------------------------------------------------------ FTP


class FtpCase:
    """Where the client and the server of one FTP case sit.

    active  : the client sends PORT/EPRT (the server opens the data connection)
    outgoing: client on hosta, server on the public web host
    incoming: client on the public cli, server on hosta reached as ftp.hosta.gwa.demo
    """

    def __init__(self, mode: str, direction: str):
        self.active = mode == "active"
        self.outgoing = direction == "outgoing"
        self.client_ns = "ha" if self.outgoing else "cli"
        self.server_ns = "web" if self.outgoing else "ha"
        self.server_bind = WEB_IP if self.outgoing else HA_IP

    def host(self, topo) -> str:
        """The server address for one control connection (a fresh reservation when incoming)."""
        return WEB_IP if self.outgoing else resolve(topo, "ftp.hosta.gwa.demo")

    def port_addr(self, topo) -> str:
        """The address the server must find in PORT/EPRT: the gateway's public
        address for a private client (rewritten by the ALG), else the client's own."""
        return GW if self.outgoing else topo.CLI_IP


def start_ftp_server(topo, case: FtpCase, root: pathlib.Path):
    return start_logged(topo, case.server_ns, [PY, "-u", str(PEERS / "ftp_server.py"), case.server_bind, "21",
                                               str(root), "--passive-ports", PASV_PORTS, "--masquerade", "none",
                                               "--duration", "600"], "ftp-server ready")


def lftp_script(case: FtpCase, host: str, local: pathlib.Path, debug_log: pathlib.Path, timeout: int) -> str:
    return "\n".join([
        "set cmd:fail-exit yes",
        "set ftp:ssl-allow no",
        f"set ftp:passive-mode {'no' if case.active else 'yes'}",
        "set ftp:auto-passive-mode no",    # a refused PORT must fail, not fall back to PASV
        "set ftp:prefer-epsv no",          # PASV (the address form), not EPSV
        "set ftp:fix-pasv-address no",     # use the PASV address as sent: no client-side NAT repair
        f"set net:timeout {timeout}",
        "set net:max-retries 2",
        "set net:reconnect-interval-base 2",
        "set mirror:parallel-transfer-count 1",
        "set xfer:clobber yes",
        f"debug -o {debug_log} -t 5",
        f"open -u rgw,rgw ftp://{host}",
        f"mirror --no-perms --verbose /down {local / 'down'}",
        f"mirror -R --no-perms --verbose {local / 'up'} /up",
        "quit",
    ]) + "\n"


def gw_snapshot(topo) -> str:
    """What the gateway's kernel holds for the ALG when a transfer failed:
    the pinhole maps, the drop counters and the TCP conntrack entries."""
    out = []
    for argv in (["nft", "list", "map", "ip", "rgw", "pinholes"],
                 ["nft", "list", "counters", "table", "ip", "rgw"],
                 ["conntrack", "-L", "-p", "tcp"]):
        cp = topo.run("gw", argv, timeout=10, check=False)
        out.append(f"--- {' '.join(argv)} ---\n{(cp.stdout + cp.stderr)[-3000:]}")
    return "\n".join(out)


def run_lftp(topo, case: FtpCase, host: str, local: pathlib.Path, net_timeout: int = 10, timeout: float = 180):
    script = local / "script.lftp"
    debug_log = local / "lftp-debug.log"
    script.write_text(lftp_script(case, host, local, debug_log, net_timeout))
    try:
        cp = topo.run(case.client_ns, ["lftp", "-f", str(script)], timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        debug = debug_log.read_text(errors="replace") if debug_log.exists() else ""
        raise AssertionError(f"lftp still running after {timeout} s\n--- lftp debug (tail) ---\n"
                             f"{debug[-4000:]}\n{gw_snapshot(topo)}") from None
    debug = debug_log.read_text(errors="replace") if debug_log.exists() else ""
    if cp.returncode != 0:
        raise AssertionError(f"lftp failed ({cp.returncode}):\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}\n"
                             f"--- lftp debug (tail) ---\n{debug[-4000:]}\n{gw_snapshot(topo)}")
    return debug


def run_curl(topo, case: FtpCase, host_fn, local: pathlib.Path, timeout: float = 180):
    """Downloads every file of /down with one curl (one control connection,
    one data connection per file), then uploads local/up with one curl.
    host_fn() gives the server address for each control connection."""
    mode = ["--ftp-port", "-"] if case.active else ["--ftp-pasv", "--no-ftp-skip-pasv-ip"]
    common = ["curl", "-sS", "-v", "--max-time", str(int(timeout / 2)), "--connect-timeout", "10", "-u", "rgw:rgw",
              *mode]
    names = sorted(p.name for p in (local / "expected").iterdir())
    (local / "down").mkdir()
    host = host_fn()
    args = []
    for n in names:
        args += [f"ftp://{host}/down/{n}", "-o", str(local / "down" / n)]
    cp = topo.run(case.client_ns, common + args, timeout=timeout, check=False)
    log = cp.stderr
    assert cp.returncode == 0, f"curl download failed ({cp.returncode}):\n{cp.stderr[-4000:]}"
    host = host_fn()
    glob = "{" + ",".join(names) + "}"
    cp = topo.run(case.client_ns, common + ["--ftp-create-dirs", "-T", str(local / "up") + "/" + glob,
                                            f"ftp://{host}/up/"], timeout=timeout, check=False)
    log += cp.stderr
    assert cp.returncode == 0, f"curl upload failed ({cp.returncode}):\n{cp.stderr[-4000:]}"
    return log


def ftp_exchange(topo, rgw, work: pathlib.Path, case: FtpCase, client: str, netem_seed=None):
    """Serve FTP_FILES files, fetch them all and upload FTP_FILES others in
    one control connection per direction; compare checksums on both ends."""
    srv = work / "server"
    loc = work / "client"
    want_down = make_files(srv / "down", seed=1)
    (srv / "up").mkdir()
    want_up = make_files(loc / "up", seed=2)
    shutil.copytree(srv / "down", loc / "expected")
    server = start_ftp_server(topo, case, srv)
    netem = None
    hosts = []

    def host():
        h = case.host(topo)
        hosts.append(h)
        return h

    try:
        if netem_seed is not None:
            netem = Netem(topo, netem_seed)
        if client == "lftp":
            log = run_lftp(topo, case, host(), loc, net_timeout=30 if netem else 10)
        else:
            log = run_curl(topo, case, host, loc)
        counters = netem.stop() if netem else None
        netem = None
    finally:
        if netem:
            netem.stop()
        topo.stop(server)
    srv_log = own_log(topo, server)
    assert sha256_tree(loc / "down") == want_down, "downloaded files differ from the server's"
    assert sha256_tree(srv / "up") == want_up, "uploaded files differ from the client's"
    # Many data connections, one control connection per client run.
    sessions = srv_log.count("FTP session opened")
    cmds = re.findall(r"<- (PORT|EPRT|PASV|EPSV)\b ?(.*)", srv_log)
    assert len(cmds) >= 2 * FTP_FILES, f"expected one data command per file, saw {len(cmds)}"
    # A data command the server refused (PORT/EPRT naming a foreign address,
    # i.e. not rewritten) names its position in the session.
    lines = srv_log.splitlines()
    for i, line in enumerate(lines):
        if "Rejected data connection" in line:
            nth = sum(1 for l in lines[:i] if re.search(r"<- (PORT|EPRT) ", l))
            raise AssertionError(f"the server refused data command #{nth} of the session "
                                 f"(address not rewritten?): {lines[i - 1].strip()} / {line.strip()}")
    kinds = {c for c, _ in cmds}
    if client == "lftp":
        assert kinds == ({"PORT"} if case.active else {"PASV"}), kinds
        assert sessions == 1, f"lftp used {sessions} control connections"
    else:
        assert kinds == ({"EPRT"} if case.active else {"EPSV"}), kinds
        assert sessions == 2, f"curl used {sessions} control connections (one download, one upload)"
    if case.active:
        # What the server was told: never a private address; outgoing, the
        # gateway's public address (rewritten by the ALG).
        want = case.port_addr(topo)
        for c, arg in cmds:
            addr = ".".join(arg.split(",")[:4]) if c == "PORT" else arg.split("|")[2]
            assert addr == want, f"server got {c} {arg}, expected address {want}"
    elif client == "lftp":
        # The client was told the pool address it connected to, not hosta's.
        pasv = re.findall(r"227 [^(]*\((\d+,\d+,\d+,\d+),\d+,\d+\)", log)
        assert pasv and all(p.replace(",", ".") == hosts[0] for p in pasv), (hosts, pasv[:5])
    return counters


FTP_CASES = [("active", "outgoing"), ("passive", "outgoing"), ("passive", "incoming"), ("active", "incoming")]


@pytest.mark.parametrize("client", ["lftp", "curl"])
@pytest.mark.parametrize("mode,direction", FTP_CASES, ids=[f"{m}-{d}" for m, d in FTP_CASES])
def test_ftp_multi_file_both_ways(topo, fresh, work, mode, direction, client):
    """lftp (PORT/PASV, mirror) and curl (EPRT/EPSV): 20 files down and 20
    up through the gateway, byte-identical. Active outgoing needs the ALG to
    rewrite PORT/EPRT; passive incoming needs it to rewrite PASV and open
    the data pinhole for EPSV."""
    ftp_exchange(topo, fresh, work, FtpCase(mode, direction), client)


@pytest.mark.parametrize("mode,direction", FTP_CASES, ids=[f"{m}-{d}" for m, d in FTP_CASES])
def test_ftp_with_loss_and_reordering(topo, fresh, work, mode, direction):
    """The same lftp transfers with 5 % loss and 10 % reordering on every TCP
    packet the router forwards: retransmitted control segments cross the
    ALG's rewrite points; files must still arrive byte-identical."""
    seed = 1 + [f"{m}-{d}" for m, d in FTP_CASES].index(f"{mode}-{direction}")
    counters = ftp_exchange(topo, fresh, work, FtpCase(mode, direction), "lftp", netem_seed=seed)
    assert_impaired(counters)


SPLIT_PORT_CLIENT = r"""
import hashlib, json, socket, sys, time
server, path, private, cuts, gap = sys.argv[1], sys.argv[2], sys.argv[3], [int(c) for c in sys.argv[4].split(",")], float(sys.argv[5])
c = socket.create_connection((server, 21), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = c.makefile("rb")
def reply():
    line = f.readline().decode(errors="replace")
    while len(line) > 3 and line[3] == "-":
        line = f.readline().decode(errors="replace")
    return line.strip()
def cmd(text):
    c.sendall(text.encode() + b"\r\n")
    return reply()
out = {"banner": reply(), "user": cmd("USER rgw"), "pass": cmd("PASS rgw"), "type": cmd("TYPE I")}
lst = socket.socket(); lst.bind((private, 0)); lst.listen(1); lst.settimeout(10)
port = lst.getsockname()[1]
line = ("PORT %s,%d,%d\r\n" % (private.replace(".", ","), port >> 8, port & 255)).encode()
pieces, last = [], 0
for cut in cuts + [len(line)]:
    pieces.append(line[last:cut]); last = cut
for i, piece in enumerate(pieces):      # one TCP segment each (NODELAY, a pause between)
    c.sendall(piece)
    if i + 1 < len(pieces):
        time.sleep(gap)
out["pieces"] = [p.decode() for p in pieces]
out["port"] = reply()
if out["port"].startswith("200"):
    c.sendall(("RETR %s\r\n" % path).encode())
    d, _ = lst.accept()
    data = b""
    while True:
        chunk = d.recv(65536)
        if not chunk:
            break
        data += chunk
    out["retr"] = reply(); out["done"] = reply()
    out["sha256"] = hashlib.sha256(data).hexdigest()
print(json.dumps(out))
"""


@pytest.mark.parametrize("cuts,gap", [("12", 0.3), ("5,16,21", 0.05)], ids=["two-segments", "four-segments"])
def test_ftp_port_split_across_segments(topo, fresh, work, cuts, gap):
    """A private client sends PORT in several TCP segments ("PORT 192,168,"
    | "0,101,p1,p2\r\n" with 0.3 s between them, or four pieces 50 ms apart):
    the ALG must still rewrite it (the server refuses a foreign address) and
    the file arrives intact."""
    case = FtpCase("active", "outgoing")
    want = make_files(work / "server" / "down", seed=4, n=1)
    server = start_ftp_server(topo, case, work / "server")
    try:
        cp = topo.run("ha", [PY, "-c", SPLIT_PORT_CLIENT, WEB_IP, "/down/f00.bin", HA_IP, cuts, str(gap)], timeout=60,
                      check=False)
    finally:
        topo.stop(server)
    assert cp.returncode == 0, cp.stderr[-3000:]
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    assert out["port"].startswith("200"), f"PORT sent as {out['pieces']} -> {out['port']}"
    got = re.findall(r"<- PORT (\S+)", own_log(topo, server))
    assert [".".join(g.split(",")[:4]) for g in got] == [GW], got
    assert out["done"].startswith("226") and out["sha256"] == want["f00.bin"], out


# ------------------------------------------------------------------ SIP


class Capture:
    """tcpdump at one end, counting the RTP that arrived there."""

    def __init__(self, topo, ns: str, path: pathlib.Path, ports: str):
        self.topo, self.path = topo, path
        self.proc = topo.popen(ns, ["tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", str(path),
                                    f"udp and dst portrange {ports}"])
        wait_for(lambda: "listening on" in topo.read_log(self.proc) or self.proc.poll() is not None,
                 10, f"tcpdump in {ns}")
        assert self.proc.poll() is None, topo.read_log(self.proc)

    def stop(self) -> dict:
        """{dst port: packets}."""
        time.sleep(0.5)
        self.topo.stop(self.proc)
        out = subprocess.run(["tcpdump", "-r", str(self.path), "-n", "-q"], capture_output=True, text=True,
                             timeout=30).stdout
        per_port: dict = {}
        for line in out.splitlines():
            m = re.search(r" > [\d.]+\.(\d+): UDP", line)
            if m:
                per_port[int(m.group(1))] = per_port.get(int(m.group(1)), 0) + 1
        return per_port


def assert_media(per_port: dict, where: str, calls: int):
    total = sum(per_port.values())
    assert total > 0, f"no RTP arrived at {where}"
    short = {p: n for p, n in per_port.items() if n < RTP_PER_CALL * 0.8}
    assert len(per_port) >= calls and not short, \
        f"RTP at {where}: {len(per_port)} streams (want {calls}) of {RTP_PER_CALL} packets; {per_port}"


ADDRESS_HEADERS = re.compile(r"^\s*(Via|v|Contact|m|c=|o=|m=)[: ]", re.I)


def private_addresses_seen(path: pathlib.Path) -> list:
    """Via/Contact headers and SDP c=/o= lines in a sipp message trace that
    still carry hosta's private address (Call-ID, From and To may: no ALG
    touches them)."""
    assert path.exists(), f"no sipp message trace {path}"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if HA_IP in line and ADDRESS_HEADERS.match(line):
            out.append(line.strip())
    return out


def sipp_stats(path: pathlib.Path) -> dict:
    lines = path.read_text().splitlines()
    assert len(lines) >= 2, f"sipp wrote no statistics to {path}"
    head = lines[0].split(";")
    last = lines[-1].split(";")
    return {k: last[i] for i, k in enumerate(head) if i < len(last)}


def sip_call_test(topo, rgw, work: pathlib.Path, transport: str, outgoing: bool, uas=None, uac=None, target=None,
                  calls: int = SIP_CALLS):
    t = {"udp": "u1", "tcp": "t1"}[transport]
    work.mkdir(parents=True, exist_ok=True)
    for f in ("uac_rtp.xml", "uas_rtp.xml"):
        shutil.copy(PEERS / "sip" / f, work / f)
    subprocess.run([PY, str(PEERS / "rtp_pcap.py"), str(work / "rtp.pcap"), str(RTP_PER_CALL)], check=True)
    uas_ns, uas_ip = uas or (("web", WEB_IP) if outgoing else ("ha", HA_IP))
    uac_ns, uac_ip = uac or (("ha", HA_IP) if outgoing else ("cli", topo.CLI_IP))
    sh = f"cd {work} && exec "
    uas_cmd = (f"sipp -sf uas_rtp.xml -i {uas_ip} -p 5060 -mp 18000 -t {t} -nostdin -m {calls} "
               f"-timeout 120s -trace_stat -stf uas_stat.csv -trace_err -error_file uas_err.log "
               f"-trace_msg -message_file uas_msg.log")
    cap_uas = Capture(topo, uas_ns, work / "uas-rx.pcap", "18000-18999")
    cap_uac = Capture(topo, uac_ns, work / "uac-rx.pcap", "16000-16999")
    uas = topo.popen(uas_ns, sh + uas_cmd)
    try:
        wait_for(lambda: listening(topo, uas_ns, transport, 5060), 10, "sipp UAS on 5060")
        if target is not None:
            pass
        elif outgoing:
            target = WEB_IP
        else:
            target = resolve(topo, ("sip" if transport == "udp" else "siptcp") + ".hosta.gwa.demo")
        uac_cmd = (f"sipp -sf uac_rtp.xml {target}:5060 -i {uac_ip} -p 5060 -mp 16000 -t {t} -nostdin "
                   f"-m {calls} -r 5 -l {calls} -timeout 60s -timeout_error -max_retrans 5 "
                   f"-trace_stat -stf uac_stat.csv -trace_err -error_file uac_err.log "
                   f"-trace_msg -message_file uac_msg.log")
        cp = topo.run(uac_ns, sh + uac_cmd, timeout=90, check=False)
        uac_err = (work / "uac_err.log").read_text(errors="replace")[-3000:] if (work / "uac_err.log").exists() else ""
        assert cp.returncode == 0, (f"sipp UAC exit {cp.returncode} (0 = every call succeeded):\n"
                                    f"{cp.stdout[-3000:]}\n{cp.stderr[-2000:]}\n--- errors ---\n{uac_err}\n"
                                    f"--- UAS ---\n{topo.read_log(uas)[-2000:]}")
        stats = sipp_stats(work / "uac_stat.csv")
        assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == (str(calls), "0"), stats
        uas.wait(30)
        assert uas.returncode == 0, f"sipp UAS exit {uas.returncode}:\n{topo.read_log(uas)[-3000:]}"
    finally:
        topo.stop(uas)
        at_uas = cap_uas.stop()
        at_uac = cap_uac.stop()
    where_uac = "the caller (" + ("hosta" if outgoing else "public cli") + ")"
    where_uas = "the callee (" + ("public web" if outgoing else "hosta") + ")"
    # The public end never saw hosta's address where it would route to it.
    leaked = private_addresses_seen(work / ("uas_msg.log" if outgoing else "uac_msg.log"))
    assert not leaked, f"SIP addresses not rewritten (seen at the public end): {leaked[:6]}"
    assert_media(at_uac, where_uac, calls)
    assert_media(at_uas, where_uas, calls)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sip_private_uac_calls_public_uas(topo, fresh, work, transport):
    """sipp on hosta calls sipp on the public web host: 10 calls, 0 failed,
    RTP both ways. The callee sends its RTP to the address in the caller's
    SDP, which only the ALG makes public."""
    sip_call_test(topo, fresh, work, transport, outgoing=True)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sip_public_uac_calls_private_uas_by_name(topo, fresh, work, transport):
    """sipp on the public cli calls sip.hosta.gwa.demo (UDP) or
    siptcp.hosta.gwa.demo (TCP), resolved by unbound to a pool address: 10
    calls, 0 failed, RTP both ways (the caller's RTP goes to the address in
    hosta's SDP answer)."""
    sip_call_test(topo, fresh, work, transport, outgoing=False)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sip_register_from_private_ua_to_public_registrar(topo, fresh, work, transport):
    """sipp on hosta registers 5 contacts with a sipp registrar on the public
    web host: every REGISTER is answered 200 OK, and the registrar sees the
    gateway's public address in Via and Contact, never hosta's."""
    t = {"udp": "u1", "tcp": "t1"}[transport]
    for f in ("uac_register.xml", "registrar.xml"):
        shutil.copy(PEERS / "sip" / f, work / f)
    n = 5
    sh = f"cd {work} && exec "
    reg = topo.popen("web", sh + f"sipp -sf registrar.xml -i {WEB_IP} -p 5060 -t {t} -nostdin -m {n} -timeout 60s "
                                 "-trace_msg -message_file reg_msg.log -trace_err -error_file reg_err.log")
    try:
        wait_for(lambda: listening(topo, "web", transport, 5060), 10, "sipp registrar on 5060")
        cp = topo.run("ha", sh + f"sipp -sf uac_register.xml {WEB_IP}:5060 -i {HA_IP} -p 5060 -t {t} -nostdin "
                                 f"-m {n} -r 5 -timeout 30s -timeout_error -max_retrans 5 "
                                 "-trace_msg -message_file ua_msg.log", timeout=60, check=False)
        assert cp.returncode == 0, f"sipp REGISTER exit {cp.returncode}:\n{cp.stdout[-3000:]}"
        reg.wait(20)
    finally:
        topo.stop(reg)
    trace = (work / "reg_msg.log").read_text(errors="replace")
    contacts = re.findall(r"(?m)^\s*Contact:\s*<sip:ua\d+@([\d.]+):", trace)
    assert len(contacts) >= 2 * n, f"registrar saw {len(contacts)} Contact headers (REGISTER + 200 each):\n{trace[-2000:]}"
    assert set(contacts) == {GW}, f"Contact addresses at the registrar: {sorted(set(contacts))}"
    leaked = private_addresses_seen(work / "reg_msg.log")
    assert not leaked, f"SIP addresses not rewritten (seen at the registrar): {leaked[:6]}"


# ------------------------------------------------------------------ RTSP


def ffmpeg_frames(topo, ns: str, url: str) -> tuple:
    """Plays url over RTP/UDP for 3 s; returns (decoded video frames, stderr).
    filter_src: only media from the server the client talks to counts."""
    cp = topo.run(ns, ["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "udp", "-rtsp_flags", "filter_src",
                       "-timeout", "10000000", "-i", url, "-map", "0:v", "-t", "3", "-f", "null", "-"],
                  timeout=60, check=False)
    frames = re.findall(r"frame=\s*(\d+)", cp.stderr)
    return (int(frames[-1]) if frames else 0), cp.stderr


def rtsp_test(topo, server_ns: str, bind: str, client_ns: str, host_fn):
    server = start_logged(topo, server_ns, [PY, "-u", str(PEERS / "rtsp_server.py"), bind, "554", "--duration", "120"],
                          "rtsp-server ready")
    try:
        frames, err = ffmpeg_frames(topo, client_ns, f"rtsp://{host_fn()}:554/test")
    finally:
        topo.stop(server)
    assert frames >= 15, f"ffmpeg decoded {frames} frames (3 s at 15 fps expected ~45):\n{err[-3000:]}"


def test_rtsp_public_client_plays_from_private_server(topo, fresh):
    """ffmpeg on cli plays rtsp://<rtsp.hosta.gwa.demo>/test from the
    GStreamer server on hosta over UDP: RTP must come from the pool address."""
    rtsp_test(topo, "ha", HA_IP, "cli", lambda: resolve(topo, "rtsp.hosta.gwa.demo"))


def test_rtsp_private_client_plays_from_public_server(topo, fresh):
    """ffmpeg on hosta plays from the GStreamer server on the public web host over UDP."""
    rtsp_test(topo, "web", WEB_IP, "ha", lambda: WEB_IP)


# ------------------------------------------------------------------ ICMP errors


def traceroute_hops(topo, ns: str, dst: str, method: str) -> tuple:
    # -U with a fixed source port: every probe is the same flow (one claim).
    flags = {"udp": ["-U", "--sport=40123"], "icmp": ["-I"]}[method]
    cp = topo.run(ns, ["traceroute", "-n", *flags, "-w", "2", "-q", "1", "-m", "6", dst], timeout=60, check=False)
    hops = [l.split()[1] for l in cp.stdout.splitlines()[1:] if len(l.split()) > 1]
    return hops, cp.stdout + cp.stderr


@pytest.mark.parametrize("method", ["udp", "icmp"])
def test_traceroute_from_public_client_to_reserved_pool_address(topo, fresh, method):
    """traceroute from cli to the pool address of hosta.gwa.demo: every hop
    answers and hosta (seen as R) is reached. The probe whose TTL runs out in
    the gateway must not use up the reservation."""
    r = resolve(topo, "hosta.gwa.demo")
    hops, out = traceroute_hops(topo, "cli", r, method)
    assert "*" not in hops and len(hops) == 3, f"all hops must answer, destination {r}:\n{out}"
    assert hops[0] == topo.RTR_IP and hops[1] in (GW, r) and hops[2] == r, out


@pytest.mark.parametrize("method", ["udp", "icmp"])
def test_traceroute_from_hosta_to_public_web(topo, fresh, method):
    hops, out = traceroute_hops(topo, "ha", WEB_IP, method)
    assert hops == [topo.GW_LAN_IP, topo.RTR_WAN_IP, WEB_IP], out


# ------------------------------------------------------------------ no kernel helper, our ALG rewrote


def test_no_kernel_helper_on_alg_flows_and_alg_rewrote(topo, fresh, work):
    """After an FTP session with PORT (rewritten) and a SIP call, the
    gateway's conntrack entries for ports 21 and 5060 carry no kernel helper,
    the ruleset assigns none, and rgw counts its own rewrites."""
    ruleset = topo.run("gw", ["nft", "list", "ruleset"]).stdout
    assert "ct helper" not in ruleset, "a kernel conntrack helper is assigned in the gateway's ruleset"
    before = alg_rewrites(fresh)
    case = FtpCase("active", "outgoing")
    root = work / "server"
    make_files(root / "down", seed=3, n=2)
    server = start_ftp_server(topo, case, root)
    try:
        script = work / "one.lftp"
        script.write_text(f"set cmd:fail-exit yes\nset ftp:ssl-allow no\nset ftp:passive-mode no\nset net:timeout 10\n"
                          f"set net:max-retries 1\nopen -u rgw,rgw ftp://{WEB_IP}\n"
                          f"get /down/f00.bin -o {work / 'a'}\nget /down/f01.bin -o {work / 'b'}\n"
                          "!sleep 1\nquit\n")
        cp = topo.run("ha", ["lftp", "-f", str(script)], timeout=60, check=False)
    finally:
        topo.stop(server)
    assert cp.returncode == 0, f"lftp active outgoing failed:\n{cp.stderr[-2000:]}"
    sip_call_test(topo, fresh, work / "sip", "udp", outgoing=True, calls=2)
    ct = topo.run("gw", ["conntrack", "-L"], timeout=10, check=False).stdout
    for port in (21, 5060):
        flows = [l for l in ct.splitlines() if f"dport={port} " in l]
        assert flows, f"no conntrack entry for the flow to port {port}:\n{ct}"
    helped = [l for l in ct.splitlines() if "helper=" in l]
    assert not helped, "kernel helpers attached:\n" + "\n".join(helped)
    after = alg_rewrites(fresh)
    assert after > before, f"alg.rewrites did not grow ({before} -> {after}) over a PORT session and a call"
