"""Static checks of the containerlab topologies in testbed/clab/.

containerlab and the container images cannot run on the development machine,
so ``containerlab deploy`` is never exercised here. Instead these tests check
that every ``testbed/clab/*.clab.yml``

* is a well-formed containerlab topology (the essentials of its schema:
  top-level ``name`` + ``topology``, known node fields, a kind per node, links
  whose endpoints are ``node:iface`` with an existing node, no interface used
  twice, interface names of at most 15 characters, eth0 left to containerlab's
  management network);
* reproduces the netns testbed: the nodes, links, bridges, addresses, routes,
  forwarding and resolvers configured by its ``exec`` lists are the ones
  ``testbed/topology.sh`` configures, read from topology.sh itself (its
  address plan variables and its ``ip -n ...`` statements), with eth0 of the
  single-homed namespaces mapped to eth1;
* binds config files that exist and agree with the netns testbed: rgw.toml
  passes ``rgw check`` and equals testbed/config/rgw.toml except for the
  control socket; demo.zone, nsd.conf and unbound.conf carry the same records
  and settings as the heredocs in topology.sh and pass nsd-checkzone,
  nsd-checkconf and unbound-checkconf.

The checkers return lists of problems, and the last tests feed them broken
copies to show that they do catch mistakes.

No root, no namespaces, no ``topo`` fixture. Needs Debian's python3-yaml, the
rgw binary ($RGW_BIN or target/debug/rgw; a missing binary is a failure, not a
skip) and nsd/unbound (installed by testbed/install-deps.sh).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest

try:
    import yaml
except ImportError:  # pragma: no cover - environment problem
    # fail these tests (not the whole session's collection) when it is missing
    yaml = None

TESTBED = pathlib.Path(__file__).resolve().parent.parent
REPO = TESTBED.parent
CLAB = TESTBED / "clab"
TOPOLOGY_SH = TESTBED / "topology.sh"
NETNS_RGW_TOML = TESTBED / "config" / "rgw.toml"
DEMO = CLAB / "rgw-demo.clab.yml"
CLAB_FILES = sorted(CLAB.glob("*.clab.yml"))

# control socket of the gateway in the containerlab topology
CLAB_RGW_SOCKET = "/run/rgw/rgw.sock"
# where rgw-demo.clab.yml expects the release binary (built by demo.sh)
RELEASE_RGW = REPO / "target" / "release" / "rgw"

PLAN_VARS = (
    "PUB_NET", "RTR_IP", "CLI_IP", "CLI_EXTRA_FIRST_OCTET", "CLI_EXTRA_LAST_OCTET",
    "PAR_IP", "RES_IP", "WEB_IP", "WAN_NET", "RTR_WAN_IP", "GW_WAN_IP",
    "POOL_NET", "LAN_NET", "GW_LAN_IP", "HA_IP", "HB_IP", "ZONE", "PARENT_ZONE",
)

# -------------------------------------------------- containerlab schema essentials
TOP_KEYS = {"name", "prefix", "mgmt", "topology", "settings"}
TOPOLOGY_KEYS = {"nodes", "links", "defaults", "kinds", "groups"}
NODE_KEYS = {
    "kind", "image", "image-pull-policy", "type", "group", "license",
    "startup-config", "enforce-startup-config", "suppress-startup-config",
    "startup-delay", "auto-remove", "restart-policy", "exec", "binds", "ports",
    "env", "env-files", "user", "entrypoint", "cmd", "publish", "labels",
    "runtime", "mgmt-ipv4", "mgmt-ipv6", "network-mode", "cpu", "cpu-set",
    "memory", "sandbox", "kernel", "extras", "config", "stages", "dns",
    "certificate", "healthcheck", "sysctls", "wait-for", "devices", "cap-add",
    "shm-size", "aliases", "components",
}
# generic kinds (the NOS kinds are irrelevant for this project)
KNOWN_KINDS = {"linux", "bridge", "ovs-bridge", "host", "ext-container"}
PULL_POLICIES = {"always", "never", "ifnotpresent"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
ENDPOINT_RE = re.compile(r"^([^:\s]+):(\S+)$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")  # IFNAMSIZ - 1
IPV4_RE = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?(?![\d.])")


def clab_iface(netns_iface: str) -> str:
    """eth0 is containerlab's management interface: the netns testbed's eth0
    (the only interface of cli/par/res/web/ha/hb) is eth1 in containerlab."""
    return "eth1" if netns_iface == "eth0" else netns_iface


def load_yaml(path: pathlib.Path):
    if yaml is None:
        pytest.fail("PyYAML is missing for this interpreter: apt-get install python3-yaml")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _node_cfg(doc: dict, name: str) -> dict:
    return (doc.get("topology") or {}).get("nodes", {}).get(name) or {}


def _effective(doc: dict, node: str, key: str):
    """Node value, else the kind's, else the defaults' (containerlab's order)."""
    topo = doc.get("topology") or {}
    cfg = _node_cfg(doc, node)
    if key in cfg:
        return cfg[key]
    kind = cfg.get("kind", (topo.get("defaults") or {}).get("kind"))
    kcfg = (topo.get("kinds") or {}).get(kind) or {}
    if key in kcfg:
        return kcfg[key]
    return (topo.get("defaults") or {}).get(key)


def _check_node_cfg(where: str, cfg, errors: list) -> None:
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        errors.append(f"{where}: must be a mapping, got {type(cfg).__name__}")
        return
    for k in sorted(set(cfg) - NODE_KEYS):
        errors.append(f"{where}: unknown node field '{k}'")
    if "kind" in cfg and cfg["kind"] not in KNOWN_KINDS:
        errors.append(f"{where}: kind '{cfg['kind']}' is not one of {sorted(KNOWN_KINDS)}")
    if "image" in cfg and not (isinstance(cfg["image"], str) and cfg["image"]):
        errors.append(f"{where}: image must be a non-empty string")
    pol = cfg.get("image-pull-policy")
    if pol is not None and str(pol).lower() not in PULL_POLICIES:
        errors.append(f"{where}: image-pull-policy '{pol}' is not Always/Never/IfNotPresent")
    for key in ("exec", "binds"):
        if key in cfg:
            v = cfg[key]
            if not (isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v)):
                errors.append(f"{where}: {key} must be a non-empty list of non-empty strings")
            elif len(set(v)) != len(v) and key == "binds":
                errors.append(f"{where}: duplicate binds")
    for b in cfg.get("binds") or []:
        parts = str(b).split(":")
        if len(parts) < 2 or not parts[0] or not parts[1].startswith("/"):
            errors.append(f"{where}: bind '{b}' is not 'host-path:/container/path[:opts]'")
        elif len(parts) > 3 or (len(parts) == 3 and not set(parts[2].split(",")) <= {"ro", "rw", "z", "Z", "shared", "slave", "private", "rshared", "rslave", "rprivate"}):
            errors.append(f"{where}: bind '{b}' has bad options")
    if "env" in cfg:
        env = cfg["env"]
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in env.items()
        ):
            errors.append(f"{where}: env must map names to strings or numbers")
    for key in ("cmd", "entrypoint"):
        if key in cfg and not isinstance(cfg[key], str):
            errors.append(f"{where}: {key} must be a string")
    nm = cfg.get("network-mode")
    if nm is not None and not (nm in ("host", "none", "bridge") or str(nm).startswith("container:")):
        errors.append(f"{where}: network-mode '{nm}' is not host/none/container:<name>")


def schema_errors(doc) -> list:
    """The essentials of containerlab's topology schema."""
    errors: list = []
    if not isinstance(doc, dict):
        return ["top level must be a mapping"]
    for k in sorted(set(doc) - TOP_KEYS):
        errors.append(f"unknown top-level key '{k}'")
    name = doc.get("name")
    if not (isinstance(name, str) and NAME_RE.match(name)):
        errors.append(f"top-level 'name' missing or invalid: {name!r}")
    topo = doc.get("topology")
    if not isinstance(topo, dict):
        return errors + ["top-level 'topology' missing or not a mapping"]
    for k in sorted(set(topo) - TOPOLOGY_KEYS):
        errors.append(f"unknown key 'topology.{k}'")
    _check_node_cfg("topology.defaults", topo.get("defaults"), errors)
    for kind, kcfg in (topo.get("kinds") or {}).items():
        if kind not in KNOWN_KINDS:
            errors.append(f"topology.kinds: unknown kind '{kind}'")
        _check_node_cfg(f"topology.kinds.{kind}", kcfg, errors)
    nodes = topo.get("nodes")
    if not (isinstance(nodes, dict) and nodes):
        return errors + ["topology.nodes missing or empty"]
    for node, cfg in nodes.items():
        where = f"node '{node}'"
        if not (isinstance(node, str) and NODE_NAME_RE.match(node)):
            errors.append(f"{where}: invalid node name")
        _check_node_cfg(where, cfg, errors)
        kind = _effective(doc, node, "kind")
        if kind is None:
            errors.append(f"{where}: no kind (neither on the node nor in topology.defaults)")
        elif kind == "linux" and not _effective(doc, node, "image"):
            errors.append(f"{where}: kind linux needs an image")
    links = topo.get("links") or []
    if not isinstance(links, list):
        return errors + ["topology.links must be a list"]
    used: dict = {}
    for i, link in enumerate(links):
        where = f"link #{i + 1}"
        if not isinstance(link, dict) or set(link) - {"endpoints", "vars", "labels", "mtu"}:
            errors.append(f"{where}: must be a mapping with 'endpoints'")
            continue
        eps = link.get("endpoints")
        if not (isinstance(eps, list) and len(eps) == 2):
            errors.append(f"{where}: endpoints must be a list of two 'node:iface' strings")
            continue
        seen_here = []
        for ep in eps:
            m = ENDPOINT_RE.match(ep) if isinstance(ep, str) else None
            if not m:
                errors.append(f"{where}: endpoint {ep!r} is not 'node:iface'")
                continue
            node, iface = m.groups()
            if node not in nodes:
                errors.append(f"{where}: endpoint '{ep}' names an unknown node '{node}'")
            if not IFNAME_RE.match(iface) or iface in (".", ".."):
                errors.append(f"{where}: interface '{iface}' of '{ep}' is not a valid name of at most 15 characters")
            if iface == "eth0" and node in nodes and _effective(doc, node, "network-mode") not in ("none", "host"):
                errors.append(f"{where}: '{ep}': eth0 is containerlab's management interface")
            if (node, iface) in used:
                errors.append(f"{where}: interface '{ep}' already used by link #{used[(node, iface)]}")
            used[(node, iface)] = i + 1
            seen_here.append((node, iface))
        if len(seen_here) == 2 and seen_here[0] == seen_here[1]:
            errors.append(f"{where}: both endpoints are '{seen_here[0][0]}:{seen_here[0][1]}'")
    return errors


# -------------------------------------------------- topology.sh (the netns testbed)
def plan_from_topology_sh(text: str) -> dict:
    """The address plan variables at the top of topology.sh."""
    plan = {}
    for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=([^\s#]+)", text, re.M):
        plan.setdefault(m.group(1), m.group(2).strip("'\""))
    missing = [v for v in PLAN_VARS if v not in plan]
    assert not missing, f"topology.sh: address plan variables not found: {missing}"
    return plan


def _expand(s: str, values: dict) -> str:
    """Expand $VAR / ${VAR} with values; keep \\$ as a literal $."""
    s = s.replace("\\$", "\0")

    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown shell variable ${name}")
        return values[name]

    s = re.sub(r"\$\{(\w+)\}|\$([A-Za-z_]\w*)", sub, s)
    return s.replace("\0", "$")


def _find(pattern: str, text: str, what: str, flags=0):
    found = list(re.finditer(pattern, text, flags | re.M))
    assert found, (
        f"topology.sh: cannot find {what} (pattern {pattern!r}); "
        "topology.sh changed - update the parser in tests/test_clab.py"
    )
    return found


def netns_model(text: str, plan: dict) -> dict:
    """What topology.sh configures, with interfaces renamed for containerlab."""
    P = plan
    nodes = set(re.search(r'^NS_KEYS="([^"]+)"', text, re.M).group(1).split())
    model = {
        "nodes": nodes,
        "addrs": {n: set() for n in nodes},
        "routes": {n: set() for n in nodes},
        "links": set(),
        "bridges": {},
        "forwarding": set(),
        "resolv": {},
    }
    # ip -n "$NS_CLI" addr add "$CLI_IP/24" dev eth0
    for m in _find(r'ip -n "\$NS_(\w+)" addr add "\$(\w+)/(\d+)" dev (\w+)', text, "ip addr add statements"):
        node, var, plen, dev = m.groups()
        model["addrs"][node.lower()].add((clab_iface(dev), f"{P[var]}/{plen}"))
    # the extra client sources: a seq loop piped into ip -batch
    (m,) = _find(
        r'for i in \$\(seq "\$(\w+)" "\$(\w+)"\); do\s*echo "addr add ([\d.]+)\.\$i/(\d+) dev (\w+)"'
        r'\s*done \| ip -n "\$NS_(\w+)" -batch -',
        text, "the loop adding the extra client addresses")
    first, last, prefix, plen, dev, node = m.groups()
    for i in range(int(P[first]), int(P[last]) + 1):
        model["addrs"][node.lower()].add((clab_iface(dev), f"{prefix}.{i}/{plen}"))
    # routes: ip -n "$NS_GW" route add default via "$RTR_WAN_IP"; ... "$POOL_NET" via ...
    for m in _find(r'ip -n "\$NS_(\w+)" route add (default|"\$(\w+)") via "\$(\w+)"', text, "ip route add statements"):
        node, dst, dstvar, via = m.groups()
        dst = "default" if dst == "default" else str(ipaddress.ip_network(P[dstvar]))
        model["routes"][node.lower()].add((dst, P[via]))
    for m in _find(r'for ns in ((?:"\$NS_\w+"\s*)+); do\s*ip -n "\$ns" route add default via "\$(\w+)"',
                   text, "the default-route loop of the public hosts"):
        for node in re.findall(r"\$NS_(\w+)", m.group(1)):
            model["routes"][node.lower()].add(("default", P[m.group(2)]))
    # links: veth A_NS A_IF B_NS B_IF
    for m in _find(r'^\s*veth "\$NS_(\w+)" (\w+) "\$NS_(\w+)" (\w+)\s*$', text, "veth statements"):
        a, ai, b, bi = m.groups()
        model["links"].add(frozenset({(a.lower(), clab_iface(ai)), (b.lower(), clab_iface(bi))}))
    (m,) = _find(r'for k in ([a-z ]+); do((?:(?!done).)*?veth "\$ns" (\w+) "\$NS_(\w+)" "v\$k".*?)done',
                 text, "the veth loop of the public segment", re.S)
    keys, body, dev, peer = m.groups()
    loop_bridge = re.search(r'link set "v\$k" master (\w+)', body)
    assert loop_bridge, "topology.sh: the public veth loop no longer enslaves v$k to a bridge"
    for k in keys.split():
        model["links"].add(frozenset({(k, clab_iface(dev)), (peer.lower(), f"v{k}")}))
    # bridges and their ports
    for m in _find(r'ip -n "\$NS_(\w+)" link add (\w+) type bridge', text, "bridges"):
        model["bridges"][(m.group(1).lower(), m.group(2))] = set()
    model["bridges"][(peer.lower(), loop_bridge.group(1))].update(f"v{k}" for k in keys.split())
    for m in re.finditer(r'ip -n "\$NS_(\w+)" link set (\w+) master (\w+)', text):
        model["bridges"][(m.group(1).lower(), m.group(3))].add(m.group(2))
    model["bridges"] = {k: frozenset(v) for k, v in model["bridges"].items()}
    for m in _find(r'ns_sysctl "\$NS_(\w+)" net\.ipv4\.ip_forward=1', text, "ip_forward sysctls"):
        model["forwarding"].add(m.group(1).lower())
    for m in _find(r'for ns in ((?:"\$NS_\w+"\s*)+); do\s*resolv_conf "\$ns" "\$(\w+)"', text, "the resolv.conf loop"):
        for node in re.findall(r"\$NS_(\w+)", m.group(1)):
            model["resolv"][node.lower()] = P[m.group(2)]
    for m in re.finditer(r'^\s*resolv_conf "\$NS_(\w+)" "\$(\w+)"', text, re.M):
        model["resolv"][m.group(1).lower()] = P[m.group(2)]
    return model


def heredoc(text: str, target: str) -> str:
    """Body of `cat >"$d/<target>" <<EOF ... EOF` in topology.sh."""
    (m,) = _find(r'cat >"\$d/' + re.escape(target) + r'" <<EOF\n(.*?)\nEOF$', text, f"the {target} heredoc", re.S)
    return m.group(1)


# -------------------------------------------------- the containerlab topology, as configured by exec
def binds_of(doc: dict, node: str, base: pathlib.Path) -> dict:
    """container path -> host path (relative host paths are relative to the topology file)."""
    out = {}
    for b in _effective(doc, node, "binds") or []:
        parts = b.split(":")
        src = pathlib.Path(os.path.expanduser(parts[0]))
        out[parts[1]] = src if src.is_absolute() else (base / src)
    return out


def _split_exec(cmd: str) -> list:
    """argv lists of one exec entry (sh -c scripts split at ; && || newlines)."""
    argv = shlex.split(cmd.replace("$$", "$"))
    if len(argv) >= 3 and argv[0] in ("sh", "bash", "ash") and argv[1] == "-c":
        return [shlex.split(p) for p in re.split(r";|&&|\|\||\n", argv[2]) if p.strip()]
    return [argv]


def clab_model(doc: dict, base: pathlib.Path) -> dict:
    """Nodes, links, and what the exec lists configure. Unknown `ip` commands
    and unresolvable files end up in model['errors']."""
    topo = doc["topology"]
    nodes = set(topo["nodes"])
    model = {
        "nodes": nodes,
        "addrs": {n: set() for n in nodes},
        "routes": {n: set() for n in nodes},
        "route_verbs": {n: [] for n in nodes},
        "links": set(),
        "bridges": {},
        "forwarding": set(),
        "resolv": {},
        "sysctls": {n: {} for n in nodes},
        "node_sh": {n: [] for n in nodes},
        "argv": {n: [] for n in nodes},
        "ifaces": {n: set() for n in nodes},
        "errors": [],
    }
    for link in topo.get("links") or []:
        eps = [tuple(e.split(":", 1)) for e in link["endpoints"]]
        model["links"].add(frozenset(eps))
        for n, i in eps:
            model["ifaces"].setdefault(n, set()).add(i)
    for node in sorted(nodes):
        binds = binds_of(doc, node, base)
        pending = []
        for cmd in _effective(doc, node, "exec") or []:
            if re.search(r"\$(?!\$)", cmd.replace("$$", "")):
                model["errors"].append(f"{node}: exec {cmd!r}: containerlab expands $ - use $$ or node.sh")
            pending.extend(_split_exec(cmd))
        while pending:
            argv = pending.pop(0)
            model["argv"][node].append(argv)
            if argv[0] == "ip":
                pending[0:0] = _ip_batch(node, argv, binds, model)
                _ip(node, argv, model)
            elif argv[0] == "sysctl":
                for a in argv[1:]:
                    if "=" in a:
                        k, v = a.split("=", 1)
                        model["sysctls"][node][k] = v
            elif argv[0] in ("sh", "bash") and len(argv) >= 2 and argv[1] in binds \
                    and binds[argv[1]].name == "node.sh":
                model["node_sh"][node].append(argv[2:])
                if argv[2:3] == ["resolv"]:
                    model["resolv"][node] = argv[3]
    model["forwarding"] = {n for n in nodes if model["sysctls"][n].get("net.ipv4.ip_forward") == "1"}
    model["bridges"] = {k: frozenset(v) for k, v in model["bridges"].items()}
    return model


def _ip_batch(node, argv, binds, model) -> list:
    if "-batch" not in argv:
        return []
    path = argv[argv.index("-batch") + 1]
    host = binds.get(path)
    if host is None or not host.is_file():
        model["errors"].append(f"{node}: ip -batch {path}: not a file bound into the node")
        return []
    out = []
    for line in host.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(["ip"] + shlex.split(line))
    return out


def _ip(node, argv, model) -> None:
    args = [a for a in argv[1:] if a not in ("-4", "-br", "-d")]
    if args[:1] == ["-batch"]:
        return
    obj, verb, rest = (args + ["", ""])[0], (args + ["", ""])[1], args[2:]

    def opt(name):
        return rest[rest.index(name) + 1] if name in rest and rest.index(name) + 1 < len(rest) else None

    if obj in ("addr", "address", "a") and verb == "add" and rest:
        dev = opt("dev")
        if dev is None:
            model["errors"].append(f"{node}: {shlex.join(argv)}: no dev")
            return
        model["addrs"][node].add((dev, str(ipaddress.ip_interface(rest[0]))))
    elif obj in ("route", "ro", "r") and verb in ("add", "replace", "del", "delete") and rest:
        dst = "default" if rest[0] in ("default", "0.0.0.0/0") else str(ipaddress.ip_network(rest[0]))
        via = opt("via")
        model["route_verbs"][node].append((verb, dst))
        if verb in ("add", "replace"):
            if via is None:
                model["errors"].append(f"{node}: {shlex.join(argv)}: no via")
                return
            model["routes"][node].add((dst, via))
        else:
            model["routes"][node] = {r for r in model["routes"][node] if r[0] != dst}
    elif obj == "link" and verb == "add" and rest[1:3] == ["type", "bridge"]:
        model["bridges"].setdefault((node, rest[0]), set())
        model["ifaces"][node].add(rest[0])
    elif obj == "link" and verb == "set" and "master" in rest:
        br = opt("master")
        if (node, br) not in model["bridges"]:
            model["errors"].append(f"{node}: {shlex.join(argv)}: bridge {br} not created before")
            return
        model["bridges"][(node, br)].add(rest[0])
    elif obj == "link" and verb == "set" and rest[1:] == ["up"]:
        pass
    else:
        model["errors"].append(f"{node}: unrecognised ip command: {shlex.join(argv)}")


def compare_models(expected: dict, actual: dict) -> list:
    """Differences between the netns testbed (expected) and a clab topology."""
    errors = list(actual["errors"])
    if expected["nodes"] != actual["nodes"]:
        errors.append(f"nodes differ: netns {sorted(expected['nodes'])}, clab {sorted(actual['nodes'])}")
    for n in sorted(expected["nodes"] & actual["nodes"]):
        for key in ("addrs", "routes"):
            want, got = expected[key][n], actual[key][n]
            for x in sorted(want - got):
                errors.append(f"{n}: {key[:-1]} {x} of the netns testbed is missing")
            for x in sorted(got - want):
                errors.append(f"{n}: {key[:-1]} {x} is not in the netns testbed")
        # every address sits on an interface the node has (a link or a bridge)
        for dev, addr in sorted(actual["addrs"][n]):
            if dev not in actual["ifaces"].get(n, set()):
                errors.append(f"{n}: address {addr} on {dev}, which is neither a link nor a bridge of {n}")
        # containerlab gives every node a default route via the management
        # network: a node must replace it, or delete it if the netns one has none
        verbs = actual["route_verbs"][n]
        if any(d == "default" for d, _ in expected["routes"][n]):
            if ("add", "default") in verbs and ("del", "default") not in verbs and ("delete", "default") not in verbs:
                errors.append(f"{n}: 'ip route add default' fails next to the management default route; use replace")
        elif not ({("del", "default"), ("delete", "default")} & set(verbs)):
            errors.append(f"{n}: has no default route in the netns testbed, but keeps containerlab's (ip route del default)")
    for lk in sorted(expected["links"] - actual["links"], key=sorted):
        errors.append(f"link {sorted(lk)} of the netns testbed is missing")
    for lk in sorted(actual["links"] - expected["links"], key=sorted):
        errors.append(f"link {sorted(lk)} is not in the netns testbed")
    if expected["bridges"] != actual["bridges"]:
        errors.append(f"bridges differ: netns { {k: sorted(v) for k, v in expected['bridges'].items()} }, "
                      f"clab { {k: sorted(v) for k, v in actual['bridges'].items()} }")
    for (n, br), ports in actual["bridges"].items():
        for p in sorted(ports - actual["ifaces"].get(n, set())):
            errors.append(f"{n}: bridge port {p} of {br} is not a link of {n}")
        if any((n, br) in lk for lk in actual["links"]):
            errors.append(f"{n}: bridge {br} has the name of a link interface")
    if expected["forwarding"] != actual["forwarding"]:
        errors.append(f"ip_forward=1 on {sorted(actual['forwarding'])}, netns: {sorted(expected['forwarding'])}")
    if expected["resolv"] != actual["resolv"]:
        errors.append(f"resolvers differ: netns {expected['resolv']}, clab {actual['resolv']}")
    for n in sorted(actual["nodes"]):
        s = actual["sysctls"][n]
        for k, v in (("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1"),
                     ("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")):
            if s.get(k) != v:
                errors.append(f"{n}: sysctl {k}={v} (set in every netns namespace) is missing")
    return errors


# -------------------------------------------------- config file parsers
def parse_zone(text: str, origin: str = ".") -> set:
    """(owner, type, rdata) of a simple master file ($ORIGIN, $TTL, (...))."""
    records, owner = set(), None
    joined, depth, buf = [], 0, ""
    for line in text.splitlines():
        line = line.split(";", 1)[0]
        depth += line.count("(") - line.count(")")
        buf += " " + line.replace("(", " ").replace(")", " ") if buf else line.replace("(", " ").replace(")", " ")
        if depth == 0:
            joined.append(buf)
            buf = ""
    for line in joined:
        if not line.strip():
            continue
        fields = line.split()
        if fields[0] == "$ORIGIN":
            origin = fields[1]
            continue
        if fields[0].startswith("$"):
            continue
        if line[0] in " \t":
            name = owner
        else:
            name, fields = fields[0], fields[1:]
            name = origin if name == "@" else name if name.endswith(".") else f"{name}.{origin}"
            owner = name
        while fields and (fields[0].isdigit() or fields[0].upper() in ("IN", "CH")):
            fields = fields[1:]
        rtype, rdata = fields[0].upper(), " ".join(fields[1:])
        records.add((owner.lower(), rtype, rdata.lower()))
    return records


def parse_conf(text: str) -> list:
    """(section, key, value) of an NSD/unbound style config file."""
    out, section = [], None
    for raw in text.splitlines():
        line = re.sub(r'\s+#.*$|^\s*#.*$', "", raw)
        if not line.strip():
            continue
        if not line[0].isspace() and line.rstrip().endswith(":"):
            section = line.strip()[:-1]
            continue
        key, _, value = line.strip().partition(":")
        out.append((section, key.strip(), value.strip().strip('"')))
    return out


def conf_get(entries: list, section: str, key: str) -> list:
    return [v for s, k, v in entries if s == section and k == key]


# -------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def topology_text() -> str:
    return TOPOLOGY_SH.read_text()


@pytest.fixture(scope="module")
def plan(topology_text) -> dict:
    return plan_from_topology_sh(topology_text)


@pytest.fixture(scope="module")
def netns(topology_text, plan) -> dict:
    return netns_model(topology_text, plan)


@pytest.fixture(scope="module")
def demo() -> dict:
    return load_yaml(DEMO)


@pytest.fixture(scope="module")
def demo_model(demo) -> dict:
    return clab_model(demo, CLAB)


@pytest.fixture(scope="module")
def rgw_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("RGW_BIN") or REPO / "target" / "debug" / "rgw")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"rgw binary not found at {path}: build it (cargo build -p rgw) or set RGW_BIN")
    return path


def _require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.fail(f"{name} not found: run testbed/install-deps.sh (it installs nsd and unbound)")
    return path


def _bound_file(doc, node: str, container_path: str) -> pathlib.Path:
    binds = binds_of(doc, node, CLAB)
    assert container_path in binds, f"{node}: nothing is bound at {container_path} (binds: {sorted(binds)})"
    return binds[container_path]


# -------------------------------------------------- (a) schema
def test_clab_files_exist():
    assert DEMO in CLAB_FILES, f"{DEMO} is missing"


@pytest.mark.parametrize("path", CLAB_FILES, ids=lambda p: p.name)
def test_schema(path):
    doc = load_yaml(path)
    errors = schema_errors(doc)
    assert not errors, f"{path.name}:\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("path", CLAB_FILES, ids=lambda p: p.name)
def test_exec_lists_parse(path):
    """No unknown ip commands, no $ that containerlab would expand, every
    node.sh call names a subcommand node.sh has and node.sh is bound there."""
    doc = load_yaml(path)
    model = clab_model(doc, path.parent)
    errors = list(model["errors"])
    # containerlab runs envsubst over the whole file (comments included)
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if re.search(r"\$(?!\$)", line.replace("$$", "")):
            errors.append(f"line {no}: containerlab expands $ in the topology file: {line.strip()}")
    node_sh = CLAB / "config" / "node.sh"
    subcommands = set(re.findall(r"^    ([a-z][a-z-]*)\)$", node_sh.read_text(), re.M))
    assert {"start", "wait-port", "resolv", "host-servers"} <= subcommands, subcommands
    for node, calls in model["node_sh"].items():
        for call in calls:
            if not call or call[0] not in subcommands:
                errors.append(f"{node}: node.sh {shlex.join(call)}: unknown subcommand")
    for node, argvs in model["argv"].items():
        for argv in argvs:
            if argv[0] in ("sh", "bash") and len(argv) > 1 and argv[1].endswith("node.sh") \
                    and argv[1] not in binds_of(doc, node, path.parent):
                errors.append(f"{node}: {argv[1]} is not bound into the node")
    assert not errors, "\n  ".join([path.name] + errors)


def test_node_sh_syntax():
    r = subprocess.run(["sh", "-n", str(CLAB / "config" / "node.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -------------------------------------------------- (b) consistent with the netns testbed
def test_plan_parsed(plan):
    """topology.sh's plan is what testbed/README.md documents: the networks
    parse and every address sits in its network."""
    pub, wan, lan, pool = (ipaddress.ip_network(plan[k]) for k in ("PUB_NET", "WAN_NET", "LAN_NET", "POOL_NET"))
    for k in ("RTR_IP", "CLI_IP", "PAR_IP", "RES_IP", "WEB_IP"):
        assert ipaddress.ip_address(plan[k]) in pub, k
    for k in ("RTR_WAN_IP", "GW_WAN_IP"):
        assert ipaddress.ip_address(plan[k]) in wan, k
    for k in ("GW_LAN_IP", "HA_IP", "HB_IP"):
        assert ipaddress.ip_address(plan[k]) in lan, k
    assert not pool.overlaps(wan)


def test_netns_model_parsed(netns):
    """Sanity of the topology.sh parser itself (so that an empty parse cannot pass)."""
    assert netns["nodes"] == {"cli", "rtr", "par", "res", "web", "gw", "ha", "hb"}
    assert sum(len(v) for v in netns["addrs"].values()) >= 10 + 32
    assert len(netns["links"]) == 7
    assert len(netns["bridges"]) == 2
    assert netns["forwarding"] == {"rtr", "gw"}
    assert len(netns["resolv"]) == 8


def test_same_topology_as_netns(netns, demo_model):
    errors = compare_models(netns, demo_model)
    assert not errors, "rgw-demo.clab.yml differs from topology.sh:\n  " + "\n  ".join(errors)


def test_pool_routed_to_gateway(plan, demo_model):
    assert (str(ipaddress.ip_network(plan["POOL_NET"])), plan["GW_WAN_IP"]) in demo_model["routes"]["rtr"]


def test_ipv4_literals_are_plan_values(plan, demo, demo_model):
    """Every IPv4 address written in an exec list is one of the plan's."""
    known = {plan[k] for k in PLAN_VARS if re.match(r"^[\d.]+$", plan[k])}
    nets = {str(ipaddress.ip_network(plan[k])) for k in ("PUB_NET", "WAN_NET", "LAN_NET", "POOL_NET")}
    errors = []
    for node in sorted(demo_model["nodes"]):
        for cmd in _effective(demo, node, "exec") or []:
            for m in IPV4_RE.finditer(cmd):
                addr, plen = m.groups()
                if plen is not None and str(ipaddress.ip_network(m.group(0), strict=False)) in nets \
                        and ipaddress.ip_network(m.group(0), strict=False).network_address == ipaddress.ip_address(addr):
                    continue
                if addr not in known:
                    errors.append(f"{node}: {m.group(0)} in {cmd!r} is not an address of topology.sh's plan")
    assert not errors, "\n  ".join(errors)


def test_host_servers_match_rgw_hosts(demo_model):
    """rgw.toml's hosts are the nodes that run their servers, at their address."""
    cfg = tomllib.loads((CLAB / "config" / "rgw.toml").read_text())
    runs = {c[1]: n for n, calls in demo_model["node_sh"].items() for c in calls if c[:1] == ["host-servers"]}
    for host in cfg["hosts"]:
        node = runs.get(host["name"])
        assert node, f"no node runs the servers of {host['name']} (node.sh host-servers {host['name']})"
        addrs = {a.split("/")[0] for _, a in demo_model["addrs"][node]}
        assert host["ipv4"] in addrs, f"{host['name']} is {host['ipv4']} in rgw.toml, node {node} has {addrs}"


# -------------------------------------------------- (c) bound files
@pytest.mark.parametrize("path", CLAB_FILES, ids=lambda p: p.name)
def test_binds_exist(path):
    doc = load_yaml(path)
    errors = []
    for node in doc["topology"]["nodes"]:
        for cpath, host in binds_of(doc, node, path.parent).items():
            host = pathlib.Path(os.path.normpath(host))
            if REPO not in host.parents:
                errors.append(f"{node}: bind {host} -> {cpath} is outside the repository")
            elif (REPO / "target") in host.parents:
                # build output, not in the tree: only the release binary demo.sh builds
                if host != RELEASE_RGW:
                    errors.append(f"{node}: bind {host}: the only build output bound is {RELEASE_RGW}")
            elif not host.is_file():
                errors.append(f"{node}: bind source {host} -> {cpath} does not exist")
    assert not errors, "\n  ".join(errors)


def test_gw_runs_rgw(demo):
    assert _bound_file(demo, "gw", "/usr/local/bin/rgw").resolve() == RELEASE_RGW.resolve()
    assert _bound_file(demo, "gw", "/etc/rgw/rgw.toml").resolve() == (CLAB / "config" / "rgw.toml").resolve()
    argvs = [a for cmd in _effective(demo, "gw", "exec") for a in _split_exec(cmd)]
    runs = [a for a in argvs if "run" in a and "rgw" in a]
    assert any(a[-4:] == ["rgw", "run", "--config", "/etc/rgw/rgw.toml"] for a in runs), \
        f"gw does not run 'rgw run --config /etc/rgw/rgw.toml': {runs}"


def test_rgw_toml_passes_rgw_check(rgw_bin):
    cfg = CLAB / "config" / "rgw.toml"
    r = subprocess.run([str(rgw_bin), "check", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"rgw check {cfg} failed:\n{r.stdout}{r.stderr}"


def test_rgw_toml_is_the_netns_config(plan, demo_model):
    clab = tomllib.loads((CLAB / "config" / "rgw.toml").read_text())
    netns = tomllib.loads(NETNS_RGW_TOML.read_text())
    assert clab.get("control", {}).get("socket") == CLAB_RGW_SOCKET
    clab["control"]["socket"] = netns.get("control", {}).get("socket")
    assert clab == netns, "config/rgw.toml must equal testbed/config/rgw.toml except [control] socket"
    # and it fits the clab gateway: its interfaces and addresses
    gw = demo_model["addrs"]["gw"]
    assert (clab["wan"]["interface"], f"{plan['GW_WAN_IP']}/{ipaddress.ip_network(plan['WAN_NET']).prefixlen}") in gw
    assert (clab["lan"]["interface"], f"{plan['GW_LAN_IP']}/{ipaddress.ip_network(plan['LAN_NET']).prefixlen}") in gw
    assert clab["wan"]["service_address"] == plan["GW_WAN_IP"]
    assert clab["lan"]["address"] == plan["GW_LAN_IP"]
    assert ipaddress.ip_network(clab["lan"]["network"]) == ipaddress.ip_network(plan["LAN_NET"])
    assert clab["lan"]["upstream_resolver"] == plan["RES_IP"]
    assert clab["zone"]["name"].rstrip(".") + "." == plan["ZONE"]
    pool = ipaddress.ip_network(plan["POOL_NET"])
    for entry in clab["pool"]["addresses"]:
        for a in entry.split("-"):
            assert ipaddress.ip_network(a, strict=False).subnet_of(pool), f"pool entry {entry} outside {pool}"


def zone_errors(records: set, plan: dict, service_address: str) -> list:
    errors = []
    zone = plan["ZONE"].lower()
    parent = plan["PARENT_ZONE"].lower()
    ns_names = {r for o, t, r in records if o == zone and t == "NS"}
    if not ns_names:
        errors.append(f"no delegation: no NS record for {zone}")
    for ns in ns_names:
        glue = {r for o, t, r in records if o == ns and t == "A"}
        if ns.endswith(zone) and glue != {service_address}:
            errors.append(f"glue of {ns} is {sorted(glue)}, the gateway's service address is {service_address}")
    if not any(o == parent and t == "SOA" for o, t, _ in records):
        errors.append(f"no SOA for {parent}")
    if ("ns." + parent, "A", plan["PAR_IP"]) not in records:
        errors.append(f"ns.{parent} A {plan['PAR_IP']} missing")
    if ("www." + parent, "A", plan["WEB_IP"]) not in records:
        errors.append(f"www.{parent} A {plan['WEB_IP']} missing")
    return errors


def test_zone_file(plan, demo, topology_text):
    zone_file = _bound_file(demo, "par", "/etc/nsd/demo.zone")
    records = parse_zone(zone_file.read_text())
    service = tomllib.loads((CLAB / "config" / "rgw.toml").read_text())["wan"]["service_address"]
    errors = zone_errors(records, plan, service)
    assert not errors, "\n  ".join(errors)
    netns = parse_zone(_expand(heredoc(topology_text, "demo.zone"), plan))
    assert records == netns, f"demo.zone differs from topology.sh's: {sorted(records ^ netns)}"


def test_zone_file_nsd_checkzone(plan, demo):
    zone_file = _bound_file(demo, "par", "/etc/nsd/demo.zone")
    r = subprocess.run([_require_tool("nsd-checkzone"), plan["PARENT_ZONE"], str(zone_file)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


NSD_PATH_KEYS = {"zonesdir", "zonelistfile", "xfrdfile", "xfrdir", "pidfile", "logfile"}
UNBOUND_PATH_KEYS = {"directory", "pidfile", "logfile", "control-interface"}


def _conf_vs_heredoc(conf: list, netns_text: str, plan: dict, path_keys: set, optional: set) -> list:
    values = dict(plan, d="/STATE", rrl="", extra="")
    netns = parse_conf(_expand(netns_text, values))
    strip = lambda entries: sorted((s, k, v) for s, k, v in entries if k not in path_keys | optional)  # noqa: E731
    a, b = strip(conf), strip(netns)
    return [f"only in clab: {x}" for x in a if x not in b] + [f"only in topology.sh: {x}" for x in b if x not in a]


def test_nsd_conf(plan, demo, topology_text):
    path = _bound_file(demo, "par", "/etc/nsd/nsd.conf")
    conf = parse_conf(path.read_text())
    assert conf_get(conf, "server", "ip-address") == [plan["PAR_IP"]]
    assert conf_get(conf, "zone", "name") == [plan["PARENT_ZONE"]]
    zonesdir = conf_get(conf, "server", "zonesdir")[0]
    zonefile = conf_get(conf, "zone", "zonefile")[0]
    assert posix_join(zonesdir, zonefile) in binds_of(demo, "par", CLAB), \
        f"the zone file {zonesdir}/{zonefile} is not bound into par"
    argvs = [a for cmd in _effective(demo, "par", "exec") for a in _split_exec(cmd)]
    assert any(a[-4:] == ["nsd", "-d", "-c", "/etc/nsd/nsd.conf"] for a in argvs), "par does not start nsd -c /etc/nsd/nsd.conf"
    errors = _conf_vs_heredoc(conf, heredoc(topology_text, "nsd.conf"), plan, NSD_PATH_KEYS, {"rrl-ratelimit"})
    assert not errors, "nsd.conf differs from topology.sh's:\n  " + "\n  ".join(errors)
    r = subprocess.run([_require_tool("nsd-checkconf"), str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def posix_join(a: str, b: str) -> str:
    return b if b.startswith("/") else a.rstrip("/") + "/" + b


def test_unbound_conf(plan, demo, topology_text):
    path = _bound_file(demo, "res", "/etc/unbound/unbound.conf")
    conf = parse_conf(path.read_text())
    assert conf_get(conf, "server", "interface") == [plan["RES_IP"]]
    assert conf_get(conf, "server", "qname-minimisation") == ["no"]
    assert conf_get(conf, "server", "module-config") == ["iterator"]
    assert any(v.endswith(" allow") for v in conf_get(conf, "server", "access-control"))
    assert conf_get(conf, "stub-zone", "name") == [plan["PARENT_ZONE"]]
    assert conf_get(conf, "stub-zone", "stub-addr") == [plan["PAR_IP"]], "unbound's stub must point to the parent (par)"
    argvs = [a for cmd in _effective(demo, "res", "exec") for a in _split_exec(cmd)]
    assert any(a[-4:] == ["unbound", "-d", "-c", "/etc/unbound/unbound.conf"] for a in argvs)
    errors = _conf_vs_heredoc(conf, heredoc(topology_text, "unbound.conf"), plan, UNBOUND_PATH_KEYS,
                              {"infra-cache-max-rtt"})
    assert not errors, "unbound.conf differs from topology.sh's:\n  " + "\n  ".join(errors)
    r = subprocess.run([_require_tool("unbound-checkconf"), str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


# -------------------------------------------------- the checkers catch mistakes
def _mutate_exec(doc: dict, node: str, old: str, new) -> dict:
    doc = copy.deepcopy(doc)
    ex = doc["topology"]["nodes"][node]["exec"]
    i = next((i for i, c in enumerate(ex) if c == old), None)
    assert i is not None, f"{node}: exec entry {old!r} not found (the topology changed: update this test)"
    if new is None:
        del ex[i]
    else:
        ex[i] = new
    return doc


def test_checker_catches_wrong_address(netns, demo, plan):
    bad = _mutate_exec(demo, "par", f"ip addr add {plan['PAR_IP']}/24 dev eth1", "ip addr add 203.0.113.55/24 dev eth1")
    errors = compare_models(netns, clab_model(bad, CLAB))
    assert any("203.0.113.55/24" in e for e in errors), errors


def test_checker_catches_missing_pool_route(netns, demo, plan):
    bad = _mutate_exec(demo, "rtr", f"ip route add {plan['POOL_NET']} via {plan['GW_WAN_IP']}", None)
    errors = compare_models(netns, clab_model(bad, CLAB))
    assert any(plan["POOL_NET"] in e and "missing" in e for e in errors), errors


def test_checker_catches_kept_default_route(netns, demo):
    bad = _mutate_exec(demo, "rtr", "ip route del default", None)
    errors = compare_models(netns, clab_model(bad, CLAB))
    assert any("ip route del default" in e for e in errors), errors


def test_checker_catches_bad_links(demo):
    bad = copy.deepcopy(demo)
    bad["topology"]["links"] += [
        {"endpoints": ["cli:eth1", "nowhere:eth1"]},
        {"endpoints": ["ha:averyveryverylongname", "hb:eth0"]},
    ]
    del bad["topology"]["nodes"]["web"]["kind"]
    errors = schema_errors(bad)
    for needle in ("unknown node 'nowhere'", "'cli:eth1' already used", "at most 15", "eth0 is containerlab",
                   "node 'web': no kind"):
        assert any(needle in e for e in errors), (needle, errors)


def test_checker_catches_wrong_glue(plan):
    zone = _expand(heredoc(TOPOLOGY_SH.read_text(), "demo.zone"), dict(plan, GW_WAN_IP="198.51.100.3"))
    errors = zone_errors(parse_zone(zone), plan, plan["GW_WAN_IP"])
    assert any("glue" in e for e in errors), errors


def test_checker_catches_unescaped_dollar(demo):
    bad = copy.deepcopy(demo)
    bad["topology"]["nodes"]["cli"]["exec"].append("sh -c 'echo $HOME'")
    assert any("expands $" in e for e in clab_model(bad, CLAB)["errors"])
