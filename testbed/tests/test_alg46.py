"""The ALG in the NAT46 direction: the private IPv4-only host hosta talking
FTP and SIP to an IPv6-only public server (pyftpdlib / sipp -6 on web's
2001:db8:0:113::80) through the proxy IPv4 the gateway's LAN DNS gives for
`A v6only.demo` (pool4 10.64.0.0/24), our translator (TUN + rgw-xlat) and
NAT66 to wan_address6 2001:db8:0:100::2 (docs/rgw64.md).

  FTP active   `PORT hosta,p` / `EPRT |1|hosta|p|` reach the server as
               `EPRT |2|2001:db8:0:100::2|p'|` (p' = p unless taken), with an
               IPv6 pinhole on the gateway: the server's data connection to
               [2001:db8:0:100::2]:p' arrives at hosta from the proxy IPv4.
  FTP EPSV     passes unchanged (no ALG needed).
  FTP PASV     reaches the server as `EPSV`; its `229 (|||p|)` reaches the
               client as `227 (<proxy IPv4>,p)`.
  SIP          hosta's IPv4 in request-URI/Via/Contact becomes
               [2001:db8:0:100::2], the proxy IPv4 in the request-URI the
               server's [IPv6]; SDP `IN IP4 hosta` becomes
               `IN IP6 2001:db8:0:100::2` (pinholes for the server's RTP);
               back: [2001:db8:0:100::2] becomes hosta, and the server's
               `IN IP6 <its address>` becomes `IN IP4 <proxy IPv4>`.

Every test checks the bytes on both ends (sha256 of every file; RTP counted
with tcpdump at both ends) and what each side was told (pyftpdlib's log,
curl/lftp transcripts, sipp message logs). The 6->4 and 4->6 (public client)
directions are in test_alg64.py, whose helpers this module reuses.
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
import shutil
import subprocess
import time

import pytest

from rgwproc import rgw64_gateway, work_dir
from test_alg64 import (FILES, PASV_PORTS, PEERS, PY, RTP_PER_CALL, SIP_CALLS, Procs,
                        alg_counters, assert_media, nsrun, rtp_per_port, server_commands, setup_files,
                        sha256_tree)

GW6 = "2001:db8:0:100::2"             # wan_address6 (NAT66 source)
POOL4 = ipaddress.ip_network("10.64.0.0/24")
HOSTC_PROXY4 = "10.64.0.1"           # static, hostc's: never v6only.demo's
ALG_FTP_PORT = 21
NON_ALG_FTP_PORT = 2121


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def six(topo):
    """The IPv6 layer plus rgw with [rgw64] and the ALG; both removed at the end."""
    with rgw64_gateway(topo) as r:
        yield r


@pytest.fixture
def gw64(six, topo):
    if not six.alive():
        pytest.fail(f"rgw died:\n{six.log()}")
    topo.unbound_control("flush_infra", "all", check=False)
    return six


@pytest.fixture
def work(topo, request):
    return work_dir(topo, request, "alg46")


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.stop_all()


def proxy4(topo) -> str:
    """hosta asks the gateway's LAN DNS `A v6only.demo`: a proxy IPv4 from
    pool4, bound to web's IPv6 at DNS time (and refreshed by asking again)."""
    cp = nsrun(topo.NS_HA, ["dig", "+short", "+time=2", "+tries=2", f"@{topo.GW_LAN_IP}", "v6only.demo", "A"],
               timeout=15)
    ans = [l for l in cp.stdout.split() if l and not l.startswith(";")]
    assert len(ans) == 1, f"A v6only.demo from {topo.GW_LAN_IP}: {cp.stdout!r} {cp.stderr!r}"
    assert ipaddress.ip_address(ans[0]) in POOL4 and ans[0] != HOSTC_PROXY4, ans
    return ans[0]


# ------------------------------------------------------------------ FTP helpers


def start_ftp6(procs: Procs, topo, root: pathlib.Path, log: pathlib.Path, port: int = ALG_FTP_PORT):
    """pyftpdlib on web, bound to its IPv6 address only."""
    return procs.start(topo.NS_WEB, [PY, "-u", str(PEERS / "ftp_server.py"), topo.WEB_IP6, str(port), str(root),
                                     "--passive-ports", PASV_PORTS, "--masquerade", "none", "--duration", "300"],
                       log, "ftp-server ready")


def server_dialogue(log: str, limit: int = 40) -> str:
    """The data-connection commands the server got and what it answered."""
    lines = [l for l in log.splitlines()
             if re.search(r"<- (PORT|EPRT|PASV|EPSV)\b|-> (2[02]\d|4\d\d|5\d\d) ", l)]
    return "\n".join(lines[-limit:])


def capture_syns(procs: Procs, topo, work: pathlib.Path):
    """tcpdump on hosta: every TCP SYN (no ACK) arriving at hosta, i.e. the
    active-mode data connections the server opened."""
    pcap = work / "hosta-syn.pcap"
    procs.start(topo.NS_HA, ["tcpdump", "-i", "eth0", "-n", "-U", "--immediate-mode", "-Z", "root", "-w", pcap,
                             f"tcp and dst host {topo.HA_IP} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"],
                work / "tcpdump-ha.log", "listening on")
    return pcap


def syn_sources(pcap: pathlib.Path) -> list:
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-q"], capture_output=True, text=True,
                         timeout=30).stdout
    return re.findall(r" IP (\d+\.\d+\.\d+\.\d+)\.\d+ > ", out)


def curl_session(topo, url: str, mode_args, local: pathlib.Path, srv_log: pathlib.Path):
    """All files of /down in one curl (one control connection), then all of
    local/up into /up in another; on failure the message shows what curl and
    the server were told."""
    common = ["curl", "-4", "-sS", "-v", "--max-time", "60", "--connect-timeout", "10", "-u", "rgw:rgw",
              *mode_args]
    names = [f"f{i:02d}.bin" for i in range(FILES)]
    (local / "down").mkdir(parents=True, exist_ok=True)
    args = []
    for n in names:
        args += [f"{url}/down/{n}", "-o", str(local / "down" / n)]
    out = ""
    for argv, what in ((common + args, "download"),
                       (common + ["-T", f"{local / 'up'}/{{{','.join(names)}}}", f"{url}/up/"], "upload")):
        cp = nsrun(topo.NS_HA, argv, timeout=90)
        out += cp.stderr
        if cp.returncode != 0:
            told = re.findall(r"^[<>] .*$", cp.stderr, re.M)
            raise AssertionError(
                f"curl {what} failed ({cp.returncode}): {cp.stderr.strip().splitlines()[-1:]}\n"
                "--- curl's control dialogue (first and last lines) ---\n"
                + "\n".join(told[:8] + ["..."] + told[-8:]) +
                f"\n--- what the server got and answered ---\n"
                f"{server_dialogue(srv_log.read_text(errors='replace'))}")
    return out


def lftp_session(topo, host: str, active: bool, local: pathlib.Path, srv_log: pathlib.Path, settings=()):
    script = local / "script.lftp"
    debug = local / "lftp-debug.log"
    local.mkdir(parents=True, exist_ok=True)
    script.write_text("\n".join([
        "set cmd:fail-exit yes",
        "set ftp:ssl-allow no",
        f"set ftp:passive-mode {'no' if active else 'yes'}",
        *settings,
        "set net:timeout 10",
        "set net:max-retries 2",
        "set net:reconnect-interval-base 2",
        "set xfer:clobber yes",
        f"debug -o {debug} -t 5",
        f"open -u rgw,rgw ftp://{host}",
        f"mirror --no-perms --verbose /down {local / 'down'}",
        f"mirror -R --no-perms --verbose {local / 'up'} /up",
        "quit",
    ]) + "\n")
    cp = nsrun(topo.NS_HA, ["lftp", "-f", str(script)], timeout=150)
    text = debug.read_text(errors="replace") if debug.exists() else ""
    if cp.returncode != 0:
        told = re.findall(r"(?:--->|<---) .*$", text, re.M)
        raise AssertionError(
            f"lftp failed ({cp.returncode}): {cp.stderr[-600:]}\n--- lftp's control dialogue (last lines) ---\n"
            + "\n".join(told[:8] + ["..."] + told[-8:]) + f"\n--- what the server got and answered ---\n"
            f"{server_dialogue(srv_log.read_text(errors='replace'))}")
    return text


def client_ports(transcript: str) -> list:
    """(command, address, port) of every PORT/EPRT the client sent, in order
    (curl -v `> `, lftp debug `---> `)."""
    out = []
    for m in re.finditer(r"(?:^> |---> )(PORT (\d+),(\d+),(\d+),(\d+),(\d+),(\d+)|EPRT \|(\d)\|([^|]+)\|(\d+)\|)",
                         transcript, re.M):
        if m.group(2):
            out.append(("PORT", ".".join(m.group(i) for i in range(2, 6)), int(m.group(6)) * 256 + int(m.group(7))))
        else:
            out.append((f"EPRT|{m.group(8)}", m.group(9), int(m.group(10))))
    return out


def parse_eprt(arg: str):
    """`|af|addr|port|` -> (af, addr, port)."""
    parts = arg.strip().split(arg.strip()[:1] or "|")
    if len(parts) != 5:
        return None
    return parts[1], parts[2], int(parts[3]) if parts[3].isdigit() else None


# ------------------------------------------------------------------ 1. FTP active


@pytest.mark.parametrize("client", ["curl-eprt", "curl-port", "lftp-port"])
def test_ftp_active_ipv4_host_to_ipv6_only_server(gw64, topo, work, procs, client):
    """hosta (IPv4 only) -> proxy IPv4 of v6only.demo -> pyftpdlib on web's
    IPv6 only, active mode: the client's `EPRT |1|hosta|p|` (curl) or
    `PORT hosta,p` (curl --disable-eprt, lftp) is useless to an IPv6 server;
    the ALG makes it `EPRT |2|2001:db8:0:100::2|p|` and opens an IPv6
    pinhole: the server's data connections arrive at hosta from the proxy
    IPv4. FILES files down and FILES up, byte-identical."""
    srv, loc, want_down, want_up = setup_files(work)
    before = alg_counters(gw64)
    log = work / "ftp-server.log"
    start_ftp6(procs, topo, srv, log)
    pcap = capture_syns(procs, topo, work)
    p4 = proxy4(topo)
    if client == "curl-eprt":
        out = curl_session(topo, f"ftp://{p4}", ["--ftp-port", "-"], loc, log)
        want_kind = "EPRT|1"
    elif client == "curl-port":
        out = curl_session(topo, f"ftp://{p4}", ["--ftp-port", "-", "--disable-eprt"], loc, log)
        want_kind = "PORT"
    else:
        out = lftp_session(topo, p4, True, loc, log)
        want_kind = "PORT"
    time.sleep(1.0)
    procs.stop_all()
    srv_log = log.read_text(errors="replace")
    sent = client_ports(out)
    # What the IPv4 client sent: its own private address.
    assert sent and {(k, a) for k, a, _ in sent} == {(want_kind, topo.HA_IP)}, sent[:6]
    assert sha256_tree(loc / "down") == want_down, "downloaded files differ from the server's"
    assert sha256_tree(srv / "up") == want_up, "uploaded files differ from the client's"
    cmds = server_commands(srv_log)
    assert len(cmds) >= 2 * FILES - 2, f"expected a data command per file, saw {cmds}"
    # What the IPv6 server got: EPRT |2| naming the gateway's wan_address6.
    assert {c for c, _ in cmds} == {"EPRT"}, f"server got {cmds[:6]}\n{server_dialogue(srv_log)}"
    got = [parse_eprt(arg) for _, arg in cmds]
    assert all(g is not None and g[:2] == ("2", GW6) for g in got), \
        f"server got {[a for _, a in cmds][:6]}\n{server_dialogue(srv_log)}"
    # The port is kept unless taken on the gateway (rarely: at most one here).
    assert len(sent) == len(got), (sent, got)
    kept = sum(1 for (_, _, p), (_, _, q) in zip(sent, got) if p == q)
    assert kept >= len(got) - 1, f"client ports {[p for *_, p in sent]}, server got {[g[2] for g in got]}"
    # The data connections reached hosta from the proxy IPv4 (translated
    # back from [web]:… -> [2001:db8:0:100::2]:p').
    syns = syn_sources(pcap)
    assert len(syns) >= len(got) and set(syns) == {p4}, syns[:10]
    after = alg_counters(gw64)
    assert after["rewrites"] - before["rewrites"] >= len(cmds), (before, after)
    assert after["pinholes_written"] - before["pinholes_written"] >= len(cmds), (before, after)
    assert after["pinhole_errors"] == before["pinhole_errors"], (before, after)


# ------------------------------------------------------------------ 2. FTP EPSV


@pytest.mark.parametrize("client", ["curl", "lftp"])
def test_ftp_epsv_ipv4_host_to_ipv6_only_server(gw64, topo, work, procs, client):
    """Passive EPSV (curl's default; lftp ftp:prefer-epsv yes): the 229
    carries a port only, the client connects to the proxy IPv4 it already
    uses, the translator carries it. No rewrite needed."""
    srv, loc, want_down, want_up = setup_files(work)
    before = alg_counters(gw64)
    log = work / "ftp-server.log"
    start_ftp6(procs, topo, srv, log)
    p4 = proxy4(topo)
    if client == "curl":
        out = curl_session(topo, f"ftp://{p4}", ["--ftp-pasv"], loc, log)
        sent = re.findall(r"^> (PASV|EPSV)\b", out, re.M)
        told = re.findall(r"^< (227 .*|229 .*)$", out, re.M)
    else:
        out = lftp_session(topo, p4, False, loc, log, settings=["set ftp:prefer-epsv yes"])
        sent = re.findall(r"---> (PASV|EPSV)\b", out)
        told = re.findall(r"<--- (227 .*|229 .*)$", out, re.M)
    procs.stop_all()
    assert sha256_tree(loc / "down") == want_down, "downloaded files differ from the server's"
    assert sha256_tree(srv / "up") == want_up, "uploaded files differ from the client's"
    srv_log = log.read_text(errors="replace")
    cmds = server_commands(srv_log)
    assert sent and set(sent) == {"EPSV"}, sent[:6]
    assert {c for c, _ in cmds} == {"EPSV"} and len(cmds) == len(sent) >= 2 * FILES - 2, cmds
    lo, hi = map(int, PASV_PORTS.split("-"))
    for line in told:
        m = re.match(r"229 .*\(\|\|\|(\d+)\|\)", line.strip())
        assert m and lo <= int(m.group(1)) <= hi, f"client got {line!r}"
    # The server saw the client as the gateway's wan_address6 (NAT66).
    assert GW6 in srv_log, srv_log[:2000]
    after = alg_counters(gw64)
    assert after["rewrites"] == before["rewrites"], (before, after)
    assert after["pinhole_errors"] == before["pinhole_errors"], (before, after)


# ------------------------------------------------------------------ 3. FTP PASV


@pytest.mark.parametrize("client", ["curl", "lftp"])
def test_ftp_pasv_ipv4_host_to_ipv6_only_server(gw64, topo, work, procs, client):
    """PASV from the IPv4 client (curl --disable-epsv, lftp ftp:prefer-epsv
    no): an IPv6 server cannot answer it with an IPv4 address, so it reaches
    the server as `EPSV` and the `229 (|||p|)` reaches the client as
    `227 Entering Passive Mode (<proxy IPv4>,p1,p2)`."""
    srv, loc, want_down, want_up = setup_files(work)
    before = alg_counters(gw64)
    log = work / "ftp-server.log"
    start_ftp6(procs, topo, srv, log)
    p4 = proxy4(topo)
    if client == "curl":
        out = curl_session(topo, f"ftp://{p4}", ["--ftp-pasv", "--disable-epsv"], loc, log)
        sent = re.findall(r"^> (PASV|EPSV)\b", out, re.M)
        told = re.findall(r"^< (227 .*|229 .*)$", out, re.M)
    else:
        out = lftp_session(topo, p4, False, loc, log, settings=["set ftp:prefer-epsv no"])
        sent = re.findall(r"---> (PASV|EPSV)\b", out)
        told = re.findall(r"<--- (227 .*|229 .*)$", out, re.M)
    procs.stop_all()
    srv_log = log.read_text(errors="replace")
    cmds = server_commands(srv_log)
    # The client asked PASV only ...
    assert sent and set(sent) == {"PASV"}, sent[:10]
    # ... the IPv6 server was asked EPSV only (it cannot answer PASV usefully).
    assert {c for c, _ in cmds} == {"EPSV"} and len(cmds) == len(sent), \
        f"client sent {len(sent)} PASV; server got {cmds[:6]}\n{server_dialogue(srv_log)}"
    # ... and the client was answered 227 with the proxy IPv4 and the server's port.
    assert len(told) == len(sent), (sent, told[:10])
    lo, hi = map(int, PASV_PORTS.split("-"))
    for line in told:
        m = re.match(r"227 Entering Passive Mode \((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", line.strip())
        assert m, f"client got {line!r}"
        assert ".".join(m.groups()[:4]) == p4, (line, p4)
        assert lo <= int(m.group(5)) * 256 + int(m.group(6)) <= hi, line
    assert sha256_tree(loc / "down") == want_down, "downloaded files differ from the server's"
    assert sha256_tree(srv / "up") == want_up, "uploaded files differ from the client's"
    after = alg_counters(gw64)
    # PASV -> EPSV and 229 -> 227: two rewrites per data connection.
    assert after["rewrites"] - before["rewrites"] >= 2 * len(cmds), (before, after)
    assert after["pinhole_errors"] == before["pinhole_errors"], (before, after)


# ------------------------------------------------------------------ 4. control


@pytest.mark.parametrize("client", ["curl-eprt", "curl-port"])
def test_ftp_active_to_ipv6_server_fails_without_conversion_control(gw64, topo, work, procs, client):
    """Control: the same active transfer to the same IPv6 server on a non-ALG
    port (2121), so the gateway does not touch the control connection: the
    server gets hosta's `EPRT |1|192.168.0.101|p|` / `PORT 192,168,0,101,…`,
    which an IPv6 server refuses (and could not reach anyway). This is the
    failure the conversion prevents in test_ftp_active_ipv4_host_to_ipv6_only_server."""
    srv, loc, _, _ = setup_files(work)
    log = work / "ftp-server.log"
    start_ftp6(procs, topo, srv, log, port=NON_ALG_FTP_PORT)
    p4 = proxy4(topo)
    extra = ["--disable-eprt"] if client == "curl-port" else []
    cp = nsrun(topo.NS_HA, ["curl", "-4", "-sS", "-v", "--max-time", "20", "--connect-timeout", "10", "-u",
                            "rgw:rgw", "--ftp-port", "-", *extra, f"ftp://{p4}:{NON_ALG_FTP_PORT}/down/f00.bin",
                            "-o", str(loc / "y")], timeout=40)
    procs.stop_all()
    srv_log = log.read_text(errors="replace")
    # The control connection itself worked through the translator (NAT66 source).
    assert re.search(r"<- USER rgw", srv_log) and GW6 in srv_log, f"{srv_log[-2000:]}\n{cp.stderr[-2000:]}"
    assert cp.returncode != 0, "active FTP reached an IPv6 server without the conversion and worked?"
    assert not (loc / "y").exists() or (loc / "y").stat().st_size == 0
    cmds = server_commands(srv_log)
    # Unconverted: the server got hosta's private IPv4, never an IPv6 EPRT.
    assert cmds and all(c == "PORT" or arg.startswith("|1|") for c, arg in cmds), cmds
    assert any(topo.HA_IP in arg or topo.HA_IP.replace(".", ",") in arg for _, arg in cmds), cmds
    assert not any(arg.startswith("|2|") for _, arg in cmds), cmds
    # ... and refused it (pyftpdlib on IPv6: 522 for EPRT |1|, 425 for PORT).
    assert re.search(r"-> (425|500|501|522) ", srv_log), server_dialogue(srv_log)


# ------------------------------------------------------------------ 5. SIP


def sipp_messages(path: pathlib.Path, direction: str) -> list:
    """The messages sipp logged as `sent` or `received` (-trace_msg)."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    out = []
    for block in re.split(r"(?m)^-{20,}.*$", text):
        head, _, body = block.strip("\n").partition("\n")
        if re.search(rf"message {direction}\b", head):
            out.append(body.strip("\n"))
    return out


def media_ports(messages) -> dict:
    """Call-ID -> the m=audio port of its SDP (retransmissions collapse)."""
    out = {}
    for msg in messages:
        cid, port = re.search(r"^Call-ID: *(\S+)", msg, re.M | re.I), re.search(r"^m=audio (\d+) ", msg, re.M)
        if cid and port:
            out[cid.group(1)] = int(port.group(1))
    return out


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sip_ipv4_uac_calls_ipv6_only_uas(gw64, topo, work, procs, transport):
    """sipp on hosta (IPv4) calls sipp on web's IPv6 (2001:db8:0:113::80:5060)
    through the proxy IPv4 of v6only.demo: SIP_CALLS calls, none failed, RTP
    both ways. The callee is offered `c=IN IP6 2001:db8:0:100::2` (with
    pinholes for its RTP) and addressed as its own [IPv6]; the caller is
    answered `c=IN IP4 <proxy IPv4>`."""
    for f in ("uac_rtp.xml", "uas_rtp.xml"):
        shutil.copy(PEERS / "sip" / f, work / f)
    subprocess.run([PY, str(PEERS / "rtp_pcap.py"), str(work / "rtp.pcap"), str(RTP_PER_CALL)], check=True)
    before = alg_counters(gw64)
    tr = {"u1": "UDP", "t1": "TCP"}[transport]
    uac_port = 5063
    procs.start(topo.NS_WEB, ["tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", work / "uas-rx.pcap",
                              "ip6 and udp and dst portrange 28000-28999"], work / "tcpdump-web.log", "listening on")
    procs.start(topo.NS_HA, ["tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", work / "uac-rx.pcap",
                             "ip and udp and dst portrange 26000-26999"], work / "tcpdump-ha.log", "listening on")
    procs.start(topo.NS_WEB, ["/bin/sh", "-c", (
        f"cd {work} && echo sipp-uas-start && exec sipp -sf uas_rtp.xml -i {topo.WEB_IP6} -p 5060 -mp 28000 "
        f"-t {transport} -nostdin -m {SIP_CALLS} -timeout 120s -trace_stat -stf uas_stat.csv -trace_err "
        f"-error_file uas_err.log -trace_msg -message_file uas_msg.log")], work / "uas.log", "sipp-uas-start")
    time.sleep(1.0)
    p4 = proxy4(topo)
    cp = nsrun(topo.NS_HA, ["/bin/sh", "-c", (
        f"cd {work} && exec sipp -sf uac_rtp.xml {p4}:5060 -i {topo.HA_IP} -p {uac_port} -mp 26000 "
        f"-t {transport} -nostdin -m {SIP_CALLS} -r 5 -l {SIP_CALLS} -timeout 60s -timeout_error "
        f"-max_retrans 5 -trace_stat -stf uac_stat.csv -trace_err -error_file uac_err.log -trace_msg "
        f"-message_file uac_msg.log")], timeout=90)
    err = (work / "uac_err.log").read_text(errors="replace")[-3000:] if (work / "uac_err.log").exists() else ""
    uas_got = sipp_messages(work / "uas_msg.log", "received")
    uac_got = sipp_messages(work / "uac_msg.log", "received")
    assert cp.returncode == 0, (f"sipp UAC exit {cp.returncode}:\n{cp.stdout[-1500:]}\n{cp.stderr[-1500:]}\n"
                                f"--- UAC errors ---\n{err}\n--- what the UAS (IPv6) got ---\n"
                                + "\n\n".join(uas_got[:2])[:3000]
                                + "\n--- what the UAC (IPv4) got ---\n" + "\n\n".join(uac_got[:3])[:3000])
    time.sleep(1.0)
    procs.stop_all()
    invites = [m for m in uas_got if m.startswith("INVITE ")]
    assert len(invites) >= SIP_CALLS, f"UAS got {len(invites)} INVITEs:\n" + "\n\n".join(uas_got[:2])
    uas_text = "\n".join(uas_got)
    # What the IPv6 callee got: itself in the request-URI, the gateway's
    # wan_address6 in Via/Contact and SDP, never hosta's private IPv4.
    for inv in invites:
        assert inv.startswith(f"INVITE sip:service@[{topo.WEB_IP6}]:5060 "), inv[:1500]
        assert re.search(rf"^c=IN IP6 {re.escape(GW6)}\s*$", inv, re.M), inv[:1500]
        assert re.search(rf"^o=.* IN IP6 {re.escape(GW6)}\s*$", inv, re.M), inv[:1500]
        assert re.search(rf"^Via: SIP/2.0/{tr} \[{re.escape(GW6)}\]:\d+", inv, re.M | re.I), inv[:1500]
    routing = re.findall(r"^(?:Via|Contact|Route|Record-Route): .*$", uas_text, re.M | re.I)
    assert routing and all("192.168." not in l for l in routing), routing[:6]
    assert "IN IP4" not in uas_text and "192.168." not in "\n".join(
        l for l in uas_text.splitlines() if not l.lower().startswith(("from:", "call-id:"))), uas_text[:3000]
    # What the IPv4 caller got: the callee's media at the proxy IPv4, its own
    # address in the top Via, no IPv6 anywhere in the SDP.
    answers = [m for m in uac_got if m.startswith("SIP/2.0 200") and "application/sdp" in m.lower()]
    assert len(answers) >= SIP_CALLS, "\n\n".join(uac_got[:3])[:3000]
    for ans in answers:
        assert re.search(rf"^c=IN IP4 {re.escape(p4)}\s*$", ans, re.M), ans[:1500]
        assert "IN IP6" not in ans, ans[:1500]
    for msg in uac_got:
        via = re.search(r"^Via: (.*)$", msg, re.M | re.I)
        assert via and via.group(1).startswith(f"SIP/2.0/{tr} {topo.HA_IP}:{uac_port}"), msg[:1500]
    # Media ports: the caller's kept unless taken on the gateway (at most one
    # here), the callee's unchanged (the translator keeps ports).
    offered = media_ports(m for m in sipp_messages(work / "uac_msg.log", "sent") if m.startswith("INVITE "))
    got_offer = media_ports(invites)
    assert offered.keys() == got_offer.keys() and len(offered) >= SIP_CALLS, (offered, got_offer)
    assert sum(1 for c in offered if offered[c] == got_offer[c]) >= len(offered) - 1, (offered, got_offer)
    answered = media_ports(m for m in sipp_messages(work / "uas_msg.log", "sent")
                           if m.startswith("SIP/2.0 200") and "application/sdp" in m.lower())
    assert answered == media_ports(answers), (answered, media_ports(answers))
    assert_media(rtp_per_port(work / "uac-rx.pcap"), "the caller (hosta, IPv4)")
    assert_media(rtp_per_port(work / "uas-rx.pcap"), "the callee (web, IPv6)")
    after = alg_counters(gw64)
    assert after["pinholes_written"] - before["pinholes_written"] >= SIP_CALLS, (before, after)
    assert after["pinhole_errors"] == before["pinhole_errors"], (before, after)
