"""Sanity tests of the testbed itself (no gateway needed)."""

import re
import subprocess


def test_check_passes(topo):
    cp = topo.check()
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "FAIL" not in cp.stdout
    assert cp.stdout.count("PASS") >= 10


def test_namespaces_are_prefixed(topo):
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout.split()
    for key in ("cli", "rtr", "par", "res", "web", "gw", "ha", "hb"):
        ns = topo.ns(key)
        assert ns == topo.RGW_PREFIX + key
        assert ns in names


def test_resolver_resolves_parent_zone(topo):
    assert topo.dig("cli", "www.demo", server=topo.RES_IP) == [topo.WEB_IP]
    # default resolver of the client namespace (/etc/netns/<ns>/resolv.conf)
    assert topo.run("cli", ["getent", "hosts", "www.demo"]).stdout.split()[0] == topo.WEB_IP


def test_parent_delegates_gateway_zone_with_glue(topo):
    out = topo.dig("cli", "gwa.demo", "NS", server=topo.PAR_IP, short=False, extra=["+norec"])
    assert re.search(r"^gwa\.demo\.\s+\d+\s+IN\s+NS\s+ns\.gwa\.demo\.$", out, re.M), out
    assert re.search(r"^ns\.gwa\.demo\.\s+\d+\s+IN\s+A\s+198\.51\.100\.2$", out, re.M), out


def test_resolver_refuses_outside_demo(topo):
    out = topo.dig("cli", "example.com", server=topo.RES_IP, short=False)
    assert "status: REFUSED" in out, out


def test_client_fetches_public_web(topo):
    cp = topo.run("cli", ["curl", "-sS", "--max-time", "5", f"http://{topo.WEB_IP}/"])
    assert "public-web-ok" in cp.stdout
    cp = topo.run("cli", ["curl", "-sS", "--max-time", "5", "http://www.demo/"])
    assert "public-web-ok" in cp.stdout


def test_private_host_services_locally(topo):
    # talk to the servers from inside the private hosts themselves (no
    # gateway involved, so this holds whether or not rgw is running)
    assert topo.tcp_exchange("ha", topo.HA_IP, 7, b"hello\n") == b"hosta\nhello\n"
    assert topo.tcp_exchange("hb", topo.HB_IP, 7) == b"hostb\n"
    assert topo.tcp_exchange("ha", topo.HA_IP, 22) == b"hosta-22\n"
    assert topo.tcp_exchange("hb", topo.HB_IP, 80) == b"hostb-80\n"
    assert topo.udp_exchange("ha", topo.HA_IP, 7) == b"hosta\n"
    assert topo.udp_exchange("hb", topo.HB_IP, 7) == b"hostb\n"
    assert topo.tcp_exchange("ha", topo.HA_IP, 9, timeout=1) is None  # refused
    assert topo.tcp_probe("ha", topo.HA_IP, 9, timeout=1)["status"] == "refused"


def test_client_source_addresses_and_whoami(topo):
    r = topo.tcp_probe("cli", topo.WEB_IP, 8, src="203.0.113.117")
    assert r["status"] == "ok"
    name, addr, port = r["data"].decode().split()
    assert (name, addr, int(port)) == ("web", "203.0.113.117", r["local"][1])
    data = topo.udp_exchange("cli", topo.WEB_IP, 8, src="203.0.113.131")
    assert data is not None and data.decode().split()[:2] == ["web", "203.0.113.131"]
    assert topo.udp_exchange("cli", topo.WEB_IP, 7) == b"web\n"


def test_private_network_not_routed_from_public(topo):
    # the router has no route to 192.168.0.0/24 (and no default route)
    r = topo.tcp_probe("cli", topo.HA_IP, 7, timeout=1)
    assert r["status"] in ("unreachable", "timeout"), r


def test_popen_tracking(topo):
    p = topo.popen("gw", ["sleep", "60"])
    assert p.poll() is None
    topo.stop(p)
    assert p.poll() is not None


def test_many_sources_in_parallel(topo):
    # every extra client address gets its own answer, also when all send at once
    from concurrent.futures import ThreadPoolExecutor
    srcs = [f"203.0.113.{i}" for i in range(100, 132)]

    def one(src):
        return src, topo.udp_exchange("cli", topo.WEB_IP, 8, src=src, timeout=3)

    with ThreadPoolExecutor(max_workers=len(srcs)) as ex:
        results = dict(ex.map(one, srcs))
    for src, data in results.items():
        assert data is not None, src
        assert data.decode().split()[:2] == ["web", src]
