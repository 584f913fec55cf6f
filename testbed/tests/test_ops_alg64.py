"""Operations view of the ALG and the RGW64 translator (issue 7): real
traffic through both, then what an operator sees of it in `rgw status`
(JSON and human) and on the Prometheus endpoint (testbed config:
127.0.0.1:9464 in the gateway's namespace).

- ALG: a public client (cli) downloads a file from the pyftpdlib server on
  hosta through a Circular Pool address (ftp.hosta.gwa.demo) with curl
  (PASV, connecting to the address of the rewritten 227 reply), then
  Python's ftplib does the same and keeps its control connection open:
  while it is open, the flow must be listed with its addresses, and the
  rewrites and pinholes counted in status and metrics.
- RGW64: pings from cli to the IPv6-only hostc through its pool address
  (4to6 in, 6to4 back) must show in the rgw64 metric families.

One rgw runs with the shipped config plus testbed/config/rgw64.toml on the
IPv6 layer (topology.sh up6), as in test_rgw64.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import pathlib
import re
import time

import pytest

from rgwproc import REPO, rgw64_gateway, rgw_binary, work_dir

TESTBED = pathlib.Path(__file__).resolve().parent.parent
PEERS = REPO / "testbed" / "peers"
PY = "/usr/bin/python3"
POOL = ipaddress.ip_network("198.51.100.16/28")
HA_IP = "192.168.0.101"
METRICS = "http://127.0.0.1:9464/metrics"

# The public FTP client: login, PASV (the reply printed as is), a download
# over the address of the reply, then the control connection stays open
# until the test kills the process (at most 60 s).
FTP_CLIENT = r'''
import ftplib, hashlib, sys, time
host = sys.argv[1]
f = ftplib.FTP()
f.trust_server_pasv_ipv4_address = True   # connect where the 227 reply says
f.connect(host, 21, timeout=15)
f.login("rgw", "rgw")
print("PASV-REPLY", f.sendcmd("PASV"), flush=True)
data = bytearray()
f.retrbinary("RETR /down/blob.bin", data.extend)
print("SHA256", hashlib.sha256(data).hexdigest(), flush=True)
print("HOLDING", flush=True)
time.sleep(60)
'''


@pytest.fixture(scope="module")
def gw(topo):
    """The IPv6 layer and one rgw with [rgw64] (and the ALG, on by default)."""
    with rgw64_gateway(topo) as r:
        yield r


@pytest.fixture
def work(topo, request):
    return work_dir(topo, request, "ops_alg64")


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def reserve(topo, name: str) -> str:
    ans = topo.dig("cli", name, server=topo.RES_IP, timeout=3, tries=2)
    assert ans, f"no answer for {name} through the resolver"
    assert ipaddress.ip_address(ans[-1]) in POOL, f"{name} -> {ans[-1]} is not a pool address"
    return ans[-1]


def scrape(topo) -> str:
    cp = topo.run("gw", ["curl", "-sS", "--max-time", "10", METRICS], timeout=15)
    return cp.stdout


def series(text: str, name: str, labels: str = "") -> float:
    """The value of one series (`labels` as rendered: `{a="b"}`); fails when absent."""
    m = re.search(r"(?m)^" + re.escape(name + labels) + r" (\S+)$", text)
    assert m, f"no series {name}{labels} in /metrics:\n{text}"
    return float(m.group(1))


def human_status(topo, rgw) -> str:
    cp = topo.run("gw", [str(rgw_binary()), "status", "--socket", str(rgw.socket)], timeout=10)
    return cp.stdout


def test_ftp_through_the_pool_shows_in_status_and_metrics(topo, gw, work):
    assert gw.alive(), gw.log()
    topo.unbound_control("flush_infra", "all", check=False)
    root = work / "server"
    (root / "down").mkdir(parents=True)
    blob = bytes(range(256)) * 300
    (root / "down" / "blob.bin").write_bytes(blob)
    before = gw.status()["alg"]
    server = topo.popen("ha", [PY, "-u", str(PEERS / "ftp_server.py"), HA_IP, "21", str(root),
                               "--passive-ports", "30000-30049", "--masquerade", "none", "--duration", "120"])
    client = None
    try:
        wait_for(lambda: "ftp-server ready" in topo.read_log(server) or server.poll() is not None, 15,
                 "the FTP server")
        assert server.poll() is None, topo.read_log(server)
        # curl: PASV (not EPSV), data connection to the address of the 227 reply.
        got = work / "curl.bin"
        cp = topo.run("cli", ["curl", "-sS", "--max-time", "30", "--connect-timeout", "10", "-u", "rgw:rgw",
                              "--ftp-pasv", "--disable-epsv", "--no-ftp-skip-pasv-ip",
                              f"ftp://{reserve(topo, 'ftp.hosta.gwa.demo')}/down/blob.bin", "-o", str(got)],
                      timeout=45, check=False)
        assert cp.returncode == 0, f"curl PASV download failed ({cp.returncode}):\n{cp.stderr[-3000:]}"
        assert got.read_bytes() == blob
        # ftplib: the same, and the control connection stays open.
        pub = reserve(topo, "ftp.hosta.gwa.demo")
        script = work / "client.py"
        script.write_text(FTP_CLIENT)
        client = topo.popen("cli", [PY, "-u", str(script), pub])
        wait_for(lambda: "HOLDING" in topo.read_log(client) or client.poll() is not None, 30, "the FTP download")
        log = topo.read_log(client)
        assert "HOLDING" in log, f"FTP client failed:\n{log}\nserver:\n{topo.read_log(server)}"
        # The 227 reply carries the pool address, not hosta's private one.
        m = re.search(r"PASV-REPLY 227 .*\((\d+),(\d+),(\d+),(\d+),\d+,\d+\)", log)
        assert m, log
        assert ".".join(m.groups()) == pub, f"PASV reply not rewritten to {pub}:\n{log}"
        assert f"SHA256 {hashlib.sha256(blob).hexdigest()}" in log, log

        # rgw status --json: the open control flow and the counters.
        st = gw.status()["alg"]
        # One PASV reply of curl's, at least one of ftplib's.
        assert st["rewrites"] >= before["rewrites"] + 2, (before, st)
        assert st["pinholes"] >= before["pinholes"] + 2, (before, st)
        assert st["counters"]["pinholes_written"] == st["pinholes"], st
        assert st["counters"]["pinhole_errors"] == 0, st
        assert st["counters"]["flows_created"] >= 1, st
        flows = [f for f in st["flows"] if f["protocol"] == "ftp" and f["public"] == pub]
        assert len(flows) == 1, f"no single FTP flow for {pub}: {st['flows']}"
        (f,) = flows
        assert f["role"] == "inbound" and f["transport"] == "tcp", f
        assert f["private"] == f"{HA_IP}:21" and f["peer"].startswith(topo.CLI_IP + ":"), f
        assert f["rewrites"] >= 1, f
        assert st["flows_active"] >= 1, st

        # /metrics: proper families, the same numbers.
        text = scrape(topo)
        assert series(text, "rgw_alg_rewrites_total") >= st["rewrites"] > 0
        assert series(text, "rgw_alg_pinholes_total", '{result="written"}') >= st["pinholes"] > 0
        assert series(text, "rgw_alg_pinholes_total", '{result="error"}') == 0
        assert series(text, "rgw_alg_flows") >= 1
        assert series(text, "rgw_alg_flows_total", '{event="created"}') >= 1
        assert series(text, "rgw_alg_pinhole_requests_total", '{result="granted"}') >= 1
        assert series(text, "rgw_alg_packets_total") > 0
        assert "# TYPE rgw_alg_flows gauge\n" in text
        assert "# TYPE rgw_alg_rewrites_total counter\n" in text
        # No ALG counter left to the generic fallback, no gauge as a counter.
        assert "rgw_alg_flows_active" not in text
        generic = [l for l in text.splitlines() if l.startswith("# HELP rgw_alg_") and "not described yet" in l]
        assert not generic, generic

        # Human `rgw status`: the ALG block with the flow's line.
        human = human_status(topo, gw)
        assert re.search(r"(?m)^alg: \d+ flows active, \d+ rewrites, \d+ pinholes written$", human), human
        line = [l for l in human.splitlines() if l.startswith("  alg flow ftp") and f"public {pub} " in l]
        assert line, human
        assert "inbound" in line[0] and f"{HA_IP}:21" in line[0] and f"peer {topo.CLI_IP}:" in line[0], line
        assert re.search(r"\d+ rewrites, offset [+-]\d+$", line[0]), line
        assert re.search(r"(?m)^  alg pinholes_written +\d+$", human), human
    finally:
        if client is not None:
            topo.stop(client)
        topo.stop(server)


def _metric_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(r"(?m)^" + re.escape(name) + r"(?:\{[^}]*\})? (\S+)$", text))


def test_ping_through_the_translator_shows_in_metrics(topo, gw):
    assert gw.alive(), gw.log()
    topo.unbound_control("flush_infra", "all", check=False)
    before = scrape(topo)
    b4, b6 = (series(before, "rgw_rgw64_packets_total", f'{{direction="{d}"}}') for d in ("4to6", "6to4"))
    r = reserve(topo, "hostc.gwa.demo")
    cp = topo.run("cli", ["ping", "-n", "-c", "3", "-i", "0.3", "-W", "2", r], timeout=15, check=False)
    assert re.search(r"\b[1-3] received", cp.stdout) and f"from {r}" in cp.stdout, cp.stdout + cp.stderr
    text = scrape(topo)
    a4 = series(text, "rgw_rgw64_packets_total", '{direction="4to6"}')
    a6 = series(text, "rgw_rgw64_packets_total", '{direction="6to4"}')
    assert a4 >= b4 + 3 and a6 >= b6 + 1, (b4, a4, b6, a6)
    assert series(text, "rgw_rgw64_bytes_total", '{direction="4to6"}') >= 3 * 84
    assert series(text, "rgw_rgw64_icmp_translated_total", '{direction="4to6"}') >= 3
    assert series(text, "rgw_rgw64_icmp_translated_total", '{direction="6to4"}') >= 1
    assert series(text, "rgw_rgw64_mappings", '{origin="static"}') == 1
    assert series(text, "rgw_rgw64_tun_errors_total", '{op="write"}') == 0
    # Every drop reason is a series from the start; they agree with status.
    reasons = re.findall(r'(?m)^rgw_rgw64_dropped_total\{reason="([a-z0-9_]+)"\} \S+$', text)
    assert len(reasons) == 18 and "dst_not_mapped" in reasons, reasons
    assert "# TYPE rgw_rgw64_mappings gauge\n" in text
    # Status first, then a scrape: the scrape can only be ahead.
    st = gw.status()["rgw64"]
    later = scrape(topo)
    for reason, n in st["drops"].items():
        assert series(later, "rgw_rgw64_dropped_total", f'{{reason="{reason}"}}') >= n, (reason, n)
    assert _metric_sum(later, "rgw_rgw64_dropped_total") >= sum(st["drops"].values())
    assert series(later, "rgw_rgw64_mapping_events_total", '{event="created"}') >= st["mappings_created"]
    assert series(later, "rgw_rgw64_packets_total", '{direction="4to6"}') >= st["packets_4to6"]
