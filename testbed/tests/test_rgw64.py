"""RGW64 end to end: NAT64/NAT46 through our translator (TUN + rgw-xlat) with
proxy addresses synthesised by the gateway's DNS, in the netns testbed with
its IPv6 layer (topology.sh up6: IPv6 on cli/web/rtr/gw, the IPv6-only
private host hostc). Rows of the seed's "Protocol Compatibility RGW64" table:
netcat TCP/UDP 4/6 in and out, ping 4/6 both ways, traceroute 4/6 (ICMP
errors translated), NTP-style UDP out, SSH both ways, HTTP out, HTTP in.
Every server names the peer it saw, so each test checks where the bytes
arrived and through which translation. FTP and SIP through the ALG across the
two families are in test_alg64.py."""

from __future__ import annotations

import ipaddress
import pathlib
import re
import subprocess

import pytest

from rgwproc import rgw64_gateway

TESTBED = pathlib.Path(__file__).resolve().parent.parent

GW = "198.51.100.2"
GW6 = "2001:db8:0:100::2"
POOL = ipaddress.ip_network("198.51.100.16/28")
POOL4 = ipaddress.ip_network("10.64.0.0/24")
PREFIX64 = ipaddress.ip_network("fd64:64::/96")
HOSTC_PROXY4 = "10.64.0.1"


def embed(v4: str) -> str:
    """prefix64::v4 (RFC 6052 /96)."""
    return str(ipaddress.IPv6Address(int(PREFIX64.network_address) | int(ipaddress.IPv4Address(v4))))


def nsrun(ns: str, argv, timeout: float = 15, check: bool = False, input=None) -> subprocess.CompletedProcess:
    """Runs argv inside the named namespace (hostc's is not one of conftest's keys)."""
    if isinstance(argv, str):
        argv = ["/bin/sh", "-c", argv]
    try:
        return subprocess.run(["ip", "netns", "exec", ns, *map(str, argv)], capture_output=True,
                              text=True, timeout=timeout, check=check, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"timed out after {timeout}s: {argv}\n{e.stdout}\n{e.stderr}") from None


@pytest.fixture(scope="module")
def six(topo):
    """The IPv6 layer plus rgw with [rgw64]; both removed at the end."""
    with rgw64_gateway(topo) as r:
        yield r


class Ns:
    """Shorthands per namespace: cli, hosta (ha), hostc (hc)."""

    def __init__(self, topo):
        self.topo = topo
        self.cli, self.ha, self.hc = topo.NS_CLI, topo.NS_HA, topo.NS_HC


@pytest.fixture
def ns(six, topo):
    if not six.alive():
        pytest.fail(f"rgw died:\n{six.log()}")
    topo.unbound_control("flush_infra", "all", check=False)
    return Ns(topo)


def dig(ns_name: str, server: str, name: str, qtype: str) -> list:
    cp = nsrun(ns_name, ["dig", "+short", "+time=2", "+tries=2", f"@{server}", name, qtype], timeout=15)
    return [l for l in cp.stdout.split() if l and not l.startswith(";")]


def socat(ns_name: str, addr: str, data: str = "", timeout: float = 5) -> str:
    cp = nsrun(ns_name, ["socat", f"-T{timeout}", "-", addr], timeout=timeout + 10, input=data)
    return cp.stdout


def reserve(topo, name: str) -> str:
    """A public client's query through the resolver: a Circular Pool address."""
    ans = dig(topo.NS_CLI, topo.RES_IP, name, "A")
    assert ans, f"no answer for {name}"
    assert ipaddress.ip_address(ans[-1]) in POOL, ans
    return ans[-1]


# ------------------------------------------------------------------ DNS


def test_dns_synthesis_only_for_the_family_that_needs_it(ns, topo):
    lan4, lan6 = topo.GW_LAN_IP, topo.GW_LAN_IP6
    # IPv6 client, A-only name: a proxy ULA embedding the A.
    assert dig(ns.hc, lan6, "v4only.demo", "AAAA") == [embed(topo.WEB_IP)]
    # IPv4 client, same question: no synthesis (seed 001 §5).
    assert dig(ns.ha, lan4, "v4only.demo", "AAAA") == []
    # IPv4 client, AAAA-only name: a proxy IPv4 from pool4, bound at DNS time.
    (a,) = dig(ns.ha, lan4, "v6only.demo", "A")
    assert ipaddress.ip_address(a) in POOL4 and a != HOSTC_PROXY4, a
    # IPv6 client asking A: nothing synthesised.
    assert dig(ns.hc, lan6, "v6only.demo", "A") == []
    # Real records pass unchanged.
    assert dig(ns.hc, lan6, "dual.demo", "AAAA") == [topo.WEB_IP6]
    assert dig(ns.ha, lan4, "dual.demo", "A") == [topo.WEB_IP]
    assert dig(ns.ha, lan4, "v4only.demo", "A") == [topo.WEB_IP]
    # The same name again: the same proxy IPv4 (one binding per IPv6 address).
    assert dig(ns.ha, lan4, "v6only.demo", "A") == [a]
    # In-zone: the IPv6-only host's AAAA on the LAN, its static proxy as A.
    assert dig(ns.hc, lan6, "hostc.gwa.demo", "AAAA") == [topo.HC_IP6]
    assert dig(ns.ha, lan4, "hostc.gwa.demo", "A") == [HOSTC_PROXY4]
    # In-zone IPv4-only host asked over IPv6: a proxy ULA too; over IPv4: nothing.
    assert dig(ns.hc, lan6, "hosta.gwa.demo", "AAAA") == [embed(topo.HA_IP)]
    assert dig(ns.ha, lan4, "hosta.gwa.demo", "AAAA") == []
    # Public view: a ULA is never published; A allocates from the Circular Pool.
    assert dig(ns.cli, topo.RES_IP, "hostc.gwa.demo", "AAAA") == []
    reserve(topo, "hostc.gwa.demo")


def test_synthesised_ttl_is_capped(ns, topo):
    out = nsrun(ns.hc, ["dig", "+noall", "+answer", f"@{topo.GW_LAN_IP6}", "v4only.demo", "AAAA"]).stdout
    ttls = [int(l.split()[1]) for l in out.splitlines() if "AAAA" in l]
    assert ttls and all(t <= 30 for t in ttls), out


# ------------------------------------------------------------------ netcat TCP/UDP


def test_tcp_out_ipv6_host_to_ipv4_server(ns, topo):
    got = socat(ns.hc, "TCP6:v4only.demo:8")
    # web's whoami: the translated flow left through the outbound NAT.
    assert got.split()[:2] == ["web", GW], got


def test_tcp_out_ipv4_host_to_ipv6_server(ns, topo):
    got = socat(ns.ha, "TCP4:v6only.demo:8")
    assert got.split()[:2] == ["web", GW6], got


def test_tcp_out_ipv6_host_to_ipv6_server_nat66(ns, topo):
    got = socat(ns.hc, "TCP6:dual.demo:8")
    assert got.split()[:2] == ["web", GW6], got


def test_tcp_out_other_ipv6_source_gets_a_dynamic_proxy(six, ns, topo):
    """An IPv6 source without a static proxy (a second address of hostc) is
    bound to a proxy IPv4 by its first packet (NAT64, RFC 6146 style)."""
    other = "fd00:192:168::203"
    nsrun(ns.hc, ["ip", "-6", "addr", "add", f"{other}/64", "dev", "eth0", "nodad"], check=True)
    try:
        got = socat(ns.hc, f"TCP6:[{embed(topo.WEB_IP)}]:8,bind=[{other}]")
        assert got.split()[:2] == ["web", GW], got
        maps = [m for m in six.status()["rgw64"]["mappings"] if m["ipv6"] == other]
        assert len(maps) == 1 and maps[0]["origin"] == "packet", maps
        assert ipaddress.ip_address(maps[0]["ipv4"]) in POOL4 and maps[0]["ipv4"] != HOSTC_PROXY4, maps
        assert maps[0]["expires_in_s"] > 0, maps
    finally:
        nsrun(ns.hc, ["ip", "-6", "addr", "del", f"{other}/64", "dev", "eth0"])


def test_inside_the_lan_ipv6_only_and_ipv4_only_hosts_by_name(ns, topo):
    # hostc -> hosta: proxy ULA of hosta; hosta sees hostc's static proxy IPv4.
    got = socat(ns.hc, "TCP6:hosta.gwa.demo:8")
    assert got.split()[:2] == ["hosta", HOSTC_PROXY4], got
    # hosta -> hostc: hostc's A is its proxy IPv4; hostc sees prefix64::hosta.
    got = socat(ns.ha, "TCP4:hostc.gwa.demo:8")
    assert got.split()[:2] == ["hostc", embed(topo.HA_IP)], got


def test_udp_out_both_families(ns, topo):
    got = socat(ns.hc, "UDP6:v4only.demo:8", "ping\n", timeout=3)
    assert got.split()[:2] == ["web", GW], got
    got = socat(ns.ha, "UDP4:v6only.demo:8", "ping\n", timeout=3)
    assert got.split()[:2] == ["web", GW6], got


def test_tcp_in_public_ipv4_client_to_ipv6_only_host(ns, topo):
    r = reserve(topo, "hostc.gwa.demo")
    got = socat(ns.cli, f"TCP4:{r}:8", "hello\n")
    lines = got.splitlines()
    # hostc saw the client as prefix64::client, then echoed our bytes.
    assert lines[0].split()[:2] == ["hostc", embed(topo.CLI_IP)], got
    assert lines[1:] == ["hello"], got
    # Single use: the reservation admitted one flow only.
    assert socat(ns.cli, f"TCP4:{r}:8,connect-timeout=2", timeout=2) == ""


def test_udp_in_public_ipv4_client_to_ipv6_only_host(ns, topo):
    r = reserve(topo, "udp8.hostc.gwa.demo")
    got = socat(ns.cli, f"UDP4:{r}:8", "ping\n", timeout=3)
    assert got.split()[:2] == ["hostc", embed(topo.CLI_IP)], got


# ------------------------------------------------------------------ ping


def _ping_ok(out: str) -> bool:
    return re.search(r"\b(\d+) received", out) is not None and " 0 received" not in out


def test_ping_out_both_families(ns, topo):
    cp = nsrun(ns.hc, ["ping", "-6", "-n", "-c", "2", "-W", "2", "v4only.demo"])
    assert _ping_ok(cp.stdout) and embed(topo.WEB_IP) in cp.stdout, cp.stdout + cp.stderr
    cp = nsrun(ns.ha, ["ping", "-4", "-n", "-c", "2", "-W", "2", "v6only.demo"])
    assert _ping_ok(cp.stdout), cp.stdout + cp.stderr
    assert re.search(r"from 10\.64\.0\.\d+", cp.stdout), cp.stdout


def test_ping_in_public_client_to_ipv6_only_host(ns, topo):
    r = reserve(topo, "hostc.gwa.demo")
    cp = nsrun(ns.cli, ["ping", "-n", "-c", "3", "-i", "0.3", "-W", "2", r])
    assert _ping_ok(cp.stdout) and f"from {r}" in cp.stdout, cp.stdout + cp.stderr


# ------------------------------------------------------------------ traceroute


def hops(out: str) -> list:
    return [l.split()[1] for l in out.splitlines()[1:] if len(l.split()) > 1]


def test_traceroute_ipv6_host_to_ipv4_server(ns, topo):
    cp = nsrun(ns.hc, ["traceroute", "-6", "-n", "-q", "1", "-w", "1", "-m", "10", "v4only.demo"], timeout=40)
    h = hops(cp.stdout)
    assert h and h[-1] == embed(topo.WEB_IP), cp.stdout
    # ICMPv4 Time Exceeded from the router behind the gateway, translated to
    # ICMPv6 and shown at its proxy ULA.
    assert embed(topo.RTR_WAN_IP) in h, cp.stdout


def test_traceroute_ipv4_host_to_ipv6_server(ns, topo):
    (a,) = dig(ns.ha, topo.GW_LAN_IP, "v6only.demo", "A")
    cp = nsrun(ns.ha, ["traceroute", "-4", "-n", "-q", "1", "-w", "1", "-m", "10", "v6only.demo"], timeout=40)
    h = hops(cp.stdout)
    assert h and h[-1] == a, cp.stdout
    # ICMPv6 Time Exceeded from IPv6 routers (no binding) arrive translated,
    # from the translator's address (RFC 7600 dummy 192.0.0.8).
    assert "192.0.0.8" in h, cp.stdout


def test_traceroute_in_public_client_to_ipv6_only_host(ns, topo):
    r = reserve(topo, "hostc.gwa.demo")
    # One ICMP probe at a time, from TTL 1: the probe that expires in the
    # gateway passes the gate unclaimed, the next one claims (docs/rgw64.md).
    cp = nsrun(ns.cli, ["traceroute", "-I", "-N", "1", "-n", "-q", "1", "-w", "1", "-m", "8", r],
               timeout=40)
    h = hops(cp.stdout)
    assert h and h[-1] == r and len(h) < 8 and "*" not in h, cp.stdout
    assert h[0] == topo.RTR_IP, cp.stdout


# ------------------------------------------------------------------ NTP-style UDP


NTP_CLIENT = r"""
import socket, struct, sys, time
name, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if sys.argv[3] == "6" else socket.AF_INET
addr = socket.getaddrinfo(name, port, fam, socket.SOCK_DGRAM)[0][4]
s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(3)
tx = struct.pack("!II", int(time.time()) + 2208988800, 12345)
s.sendto(b"\x23" + b"\0" * 39 + tx, addr)
data, peer = s.recvfrom(512)
mode, stratum = data[0] & 7, data[1]
print(mode, stratum, data[24:32] == tx, peer[0], data[48:].decode().strip())
"""


def test_ntp_style_udp_out_both_families(ns, topo):
    cp = nsrun(ns.hc, ["/usr/bin/python3", "-c", NTP_CLIENT, "v4only.demo", "123", "6"])
    mode, stratum, origin_ok, peer, server_saw = cp.stdout.strip().split(maxsplit=4)
    assert (mode, stratum, origin_ok, peer) == ("4", "1", "True", embed(topo.WEB_IP)), cp.stdout + cp.stderr
    assert server_saw == f"web {GW}", server_saw
    cp = nsrun(ns.ha, ["/usr/bin/python3", "-c", NTP_CLIENT, "v6only.demo", "123", "4"])
    mode, stratum, origin_ok, peer, server_saw = cp.stdout.strip().split(maxsplit=4)
    assert (mode, stratum, origin_ok) == ("4", "1", "True"), cp.stdout + cp.stderr
    assert ipaddress.ip_address(peer) in POOL4 and server_saw == f"web {GW6}", cp.stdout


# ------------------------------------------------------------------ SSH


def ssh(topo, ns_name: str, target: str) -> str:
    key = pathlib.Path(topo.state_dir) / "ssh" / "client_key"
    cp = nsrun(ns_name, ["ssh", "-i", key, "-p", "2222", "-o", "StrictHostKeyChecking=no",
                         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                         "-o", "ConnectTimeout=5", f"root@{target}", "echo $SSH_CONNECTION"], timeout=30)
    return cp.stdout.strip() + cp.stderr[-300:] * (cp.returncode != 0)


def test_ssh_in_to_ipv6_only_host(ns, topo):
    r = reserve(topo, "sshd.hostc.gwa.demo")
    conn = ssh(topo, ns.cli, r).split()
    # hostc's sshd: client prefix64::client, server hostc's own address.
    assert conn[:1] == [embed(topo.CLI_IP)] and conn[2:] == [topo.HC_IP6, "2222"], conn


def test_ssh_out_both_families(ns, topo):
    conn = ssh(topo, ns.hc, "v4only.demo").split()
    assert conn[:1] == [GW] and conn[2:] == [topo.WEB_IP, "2222"], conn
    conn = ssh(topo, ns.ha, "v6only.demo").split()
    assert conn[:1] == [GW6] and conn[2:] == [topo.WEB_IP6, "2222"], conn


# ------------------------------------------------------------------ HTTP


def curl(ns_name: str, url: str) -> str:
    return nsrun(ns_name, ["curl", "-sS", "--max-time", "5", url], timeout=15).stdout.strip()


def test_http_out_both_families(ns, topo):
    assert curl(ns.ha, "http://v6only.demo:8080/") == f"web-http {GW6}"
    assert curl(ns.hc, "http://v4only.demo:8080/") == f"web-http {GW}"


def test_http_in_public_client_to_ipv6_only_host(ns, topo):
    r = reserve(topo, "web.hostc.gwa.demo")
    assert curl(ns.cli, f"http://{r}:8080/") == f"hostc-http {embed(topo.CLI_IP)}"
    # Through the gateway's www proxy too (routed by Host to the proxy IPv4).
    got = curl(ns.cli, "http://www.hostc.gwa.demo/")
    assert got.startswith("hostc-http ") and ipaddress.ip_address(got.split()[1]) in PREFIX64, got


# ------------------------------------------------------------------ the kernel side


def test_ruleset_and_routes(ns, topo):
    rules = nsrun(topo.NS_GW, ["nft", "list", "table", "ip6", "rgw"], check=True).stdout
    assert "snat to 2001:db8:0:100::2" in rules and "fd64:64::/96" in rules, rules
    # Inbound IPv6 only to published (global) host addresses: none on a ULA LAN.
    assert "ip6 daddr @hosts6 accept" in rules, rules
    hosts6 = nsrun(topo.NS_GW, ["nft", "list", "set", "ip6", "rgw", "hosts6"], check=True).stdout
    assert "elements" not in hosts6, hosts6
    rules4 = nsrun(topo.NS_GW, ["nft", "list", "chain", "ip", "rgw", "srcnat"], check=True).stdout
    assert "10.64.0.0/24" in rules4, rules4
    routes = nsrun(topo.NS_GW, ["ip", "route", "show", "dev", "rgw64"], check=True).stdout
    assert "10.64.0.0/24" in routes, routes
    routes6 = nsrun(topo.NS_GW, ["ip", "-6", "route", "show", "dev", "rgw64"], check=True).stdout
    assert "fd64:64::/96" in routes6, routes6
    # Unsolicited inbound IPv6 towards the LAN is dropped (no pool for IPv6).
    cp = nsrun(ns.cli, ["socat", "-T2", "-", f"TCP6:[{topo.HC_IP6}]:8,connect-timeout=2"], timeout=10)
    assert "hostc" not in cp.stdout


def test_status_shows_the_translator(six, ns, topo):
    """After the tests above: counters both ways and the bindings of each origin."""
    st = six.status()["rgw64"]
    assert st["packets_4to6"] > 0 and st["packets_6to4"] > 0, st
    assert st["icmp_4to6"] > 0 and st["icmp_6to4"] > 0, st
    assert st["tun_read_errors"] == 0 and st["tun_write_errors"] == 0, st
    by_origin = {}
    for m in st["mappings"]:
        by_origin.setdefault(m["origin"], []).append(m)
    (static,) = by_origin["static"]
    assert (static["ipv4"], static["ipv6"], static["expires_in_s"]) == (HOSTC_PROXY4, topo.HC_IP6, None)
    assert static["packets"] > 0, static
    # NAT46 bound at DNS time for v6only.demo.
    assert any(m["ipv6"] == topo.WEB_IP6 and m["packets"] > 0 for m in by_origin["dns"]), st
