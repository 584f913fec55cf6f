#!/bin/sh
# node.sh - helpers run by the `exec:` steps of rgw-demo.clab.yml inside a
# containerlab node (bound to /etc/rgw-testbed/node.sh in every node).
# It is the containerlab counterpart of topology.sh's start_bg /
# start_host_servers / resolv_conf / bridge_netfilter_off.
#
#   node.sh start NAME CMD...      run CMD in the background (own session),
#                                  output in /var/log/rgw-testbed/NAME.log, so
#                                  that the exec step that called us returns
#   node.sh wait-port PROTO PORT [SECONDS]
#                                  wait until something listens on tcp|udp PORT
#   node.sh resolv IP              /etc/resolv.conf -> nameserver IP
#   node.sh bridge-nf-off          bridged frames bypass iptables/nftables
#                                  (only if br_netfilter is loaded)
#   node.sh www                    /srv/www/index.html = "public-web-ok"
#   node.sh host-servers NAME      the servers of topology.sh's hosts: tcp/7 echo,
#                                  tcp/8 + udp/8 whoami, udp/7 name, and unless
#                                  NAME is "web": tcp/22, tcp/80 banners and an
#                                  OpenSSH server on tcp/2222
#
# containerlab expands $VAR in the topology file, so everything that needs
# the shell lives here rather than in the exec lists.
set -eu

LOG=/var/log/rgw-testbed
UDP_SERVER=/usr/local/lib/rgw-testbed/udp_server.py

die() { echo "node.sh: $*" >&2; exit 1; }

start() {
    name=$1; shift
    mkdir -p "$LOG" /var/log/rgw   # rgw's binding log directory
    setsid -f "$@" </dev/null >"$LOG/$name.log" 2>&1
}

wait_port() {
    proto=$1 port=$2 secs=${3:-10} flag=-t
    [ "$proto" = udp ] && flag=-u
    i=0
    while [ "$i" -lt $((secs * 10)) ]; do
        [ -n "$(ss -Hln "$flag" "sport = :$port")" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    die "nothing listens on $proto/$port after ${secs}s (see $LOG/)"
}

host_servers() {
    name=$1
    # TCP 7: host name, then echo everything back
    start "$name-tcp7" socat TCP-LISTEN:7,fork,reuseaddr "SYSTEM:echo $name; exec cat"
    # TCP 8: "whoami" - host name plus the peer address/port as seen here
    # shellcheck disable=SC2016
    start "$name-tcp8" socat TCP-LISTEN:8,fork,reuseaddr \
        'SYSTEM:echo '"$name"' $SOCAT_PEERADDR $SOCAT_PEERPORT'
    # UDP 7: name, UDP 8: whoami (one non-forking responder)
    start "$name-udp" /usr/bin/python3 -u "$UDP_SERVER" "$name" 7:name 8:whoami
    if [ "$name" != web ]; then
        start "$name-tcp22" socat TCP-LISTEN:22,fork,reuseaddr "SYSTEM:echo $name-22"
        start "$name-tcp80" socat TCP-LISTEN:80,fork,reuseaddr "SYSTEM:echo $name-80"
        # a real sshd on 2222 (the `sshd` service of hosta in rgw.toml);
        # host keys are made per container, no login key is installed
        mkdir -p /run/sshd
        ssh-keygen -A >/dev/null
        start "$name-sshd" /usr/sbin/sshd -D -e -p 2222 \
            -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
            -o KbdInteractiveAuthentication=no -o UsePAM=no -o UseDNS=no
        wait_port tcp 22
        wait_port tcp 80
        wait_port tcp 2222
    fi
    wait_port tcp 7
    wait_port tcp 8
    wait_port udp 7
    wait_port udp 8
}

[ $# -ge 1 ] || die "usage: node.sh start|wait-port|resolv|bridge-nf-off|www|host-servers ..."
cmd=$1; shift
case "$cmd" in
    start)
        [ $# -ge 2 ] || die "usage: node.sh start NAME CMD..."
        start "$@"
        ;;
    wait-port)
        [ $# -ge 2 ] || die "usage: node.sh wait-port tcp|udp PORT [SECONDS]"
        wait_port "$@"
        ;;
    resolv)
        [ $# -eq 1 ] || die "usage: node.sh resolv IP"
        # docker bind-mounts /etc/resolv.conf: rewrite it in place
        printf 'nameserver %s\noptions timeout:2 attempts:1\n' "$1" >/etc/resolv.conf
        ;;
    bridge-nf-off)
        for f in bridge-nf-call-iptables bridge-nf-call-ip6tables bridge-nf-call-arptables; do
            if [ -w "/proc/sys/net/bridge/$f" ]; then
                echo 0 >"/proc/sys/net/bridge/$f"
            fi
        done
        ;;
    www)
        mkdir -p /srv/www
        echo public-web-ok >/srv/www/index.html
        ;;
    host-servers)
        [ $# -eq 1 ] || die "usage: node.sh host-servers NAME"
        host_servers "$1"
        ;;
    *)
        die "unknown command '$cmd'"
        ;;
esac
