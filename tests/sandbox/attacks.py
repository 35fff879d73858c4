"""The attack scripts of the escape suite: each tries one thing and reports what happened, plainly.

They print `rc=` lines so the tests can assert on the exact failure, not just on "something went wrong".
"""

from __future__ import annotations

ATTACKS: dict[str, str] = {
    # $1 = port of a listener on the host's 127.0.0.1, $2 = an address of the host on its real interface.
    "tcp_loopback.sh": (
        "for target in 127.0.0.1 10.0.2.2 \"$2\"; do\n"
        "  nc -w 2 \"$target\" \"$1\" </dev/null 2>&1; echo \"nc $target rc=$?\"\n"
        "done\n"
        "ls /sys/class/net\n"
    ),
    "dns.sh": (
        "cat /etc/resolv.conf 2>&1\n"
        "nslookup example.com 2>&1; echo \"nslookup rc=$?\"\n"
        "nslookup example.com 8.8.8.8 2>&1; echo \"nslookup8 rc=$?\"\n"
    ),
    "write_root.sh": "echo x > /owned 2>&1; echo \"write rc=$?\"\nmkdir /etc 2>&1; echo \"mkdir rc=$?\"\n",
    "write_scripts.sh": (
        "echo x > /scripts/planted.sh 2>&1; echo \"write rc=$?\"\n"
        "rm /scripts/write_scripts.sh 2>&1; echo \"rm rc=$?\"\n"
    ),
    "exec_tmp.sh": (
        "cp /bin/busybox /tmp/bb && chmod 755 /tmp/bb && echo copied\n"
        "/tmp/bb echo EXECUTED 2>&1; echo \"exec rc=$?\"\n"
        "printf '#!/bin/sh\\necho EXECUTED\\n' > /tmp/x.sh && chmod 755 /tmp/x.sh\n"
        "/tmp/x.sh 2>&1; echo \"script rc=$?\"\n"
    ),
    # $1 = Herald's (fake) data folder on the host
    "read_secrets.sh": (
        "cat /etc/shadow 2>&1; echo \"shadow rc=$?\"\n"
        "cat /proc/1/root/etc/shadow 2>&1; echo \"proc1 rc=$?\"\n"
        "ls \"$1\" 2>&1; echo \"ls rc=$?\"\n"
        "cat \"$1/secrets.toml\" 2>&1; echo \"secret rc=$?\"\n"
        "grep -c \"$1\" /proc/self/mountinfo; echo \"mounted rc=$?\"\n"
        "find / -xdev -name secrets.toml 2>/dev/null | grep -c . ; echo found\n"
    ),
    "privileges.sh": (
        "grep -E '^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status\n"
        "id -u\n"
        "cp /bin/busybox /tmp/suid && chmod 4755 /tmp/suid && echo \"suid copy made\"\n"
        "/tmp/suid id -u 2>&1; echo \"suid exec rc=$?\"\n"
        "chown 0:0 /tmp/suid 2>&1; echo \"chown rc=$?\"\n"
        "unshare -U -r -m sh -c 'mount -o remount,rw / 2>&1; echo \"remount rc=$?\"; "
        "echo x > /owned 2>&1; echo \"nested write rc=$?\"; "
        "mount -t proc none /proc 2>&1; echo \"proc rc=$?\"' 2>&1\n"
    ),
    # Every process forks forever, so the run stays at its process limit until the timeout.
    # Every bomb process forks until a fork fails (busy-box sh then exits it), so the run stays at its process
    # limit; the script itself (PID 1) forks once and then spins without forking, so only the timeout ends it.
    "fork_bomb.sh": "id -u\nb() { while :; do b & done; }\nb &\nwhile :; do :; done\n",
    "memory_bomb.sh": (
        "echo \"data limit kB: $(ulimit -d)\"\n"
        "x=a; i=0\n"
        "while [ $i -lt 40 ]; do x=\"$x$x\"; i=$((i+1)); done\n"
        "echo \"SURVIVED with ${#x} bytes\"\n"
    ),
    "fill_disk.sh": (
        "head -c 50000000 /dev/zero > /tmp/one_big; echo \"big rc=$?\"; wc -c < /tmp/one_big\n"
        "rm -f /tmp/one_big\n"
        "for i in 1 2 3; do head -c 10000000 /dev/zero > /tmp/f$i 2>&1; echo \"f$i rc=$?\"; done\n"
        "df -k /tmp | tail -1\n"
    ),
    "past_timeout.sh": "echo started\nwhile :; do sleep 1; done\n",
    "print_100mb.sh": "head -c 100000000 /dev/zero | tr '\\0' x\necho\necho END\n",
    "leave_child.sh": (
        "id -u\n"
        "sleep 300 &\n"
        "setsid sleep 301 &\n"
        "(trap '' HUP TERM; exec sleep 302) &\n"
        "echo \"children left running\"\n"
        "exit 0\n"
    ),
    "hello.sh": "echo hello from $(id -u)\n",
    # Each argument is ADDRESS:PORT: try a TCP connection to it.
    "connect.sh": (
        "for target in \"$@\"; do\n"
        "  nc -w 2 \"${target%:*}\" \"${target##*:}\" </dev/null 2>&1; echo \"nc $target rc=$?\"\n"
        "done\n"
        "ls /sys/class/net\n"
    ),
    # A DNS lookup of $1 (busybox nslookup asks the container's resolvers, never /etc/hosts), then TCP to each further
    # HOST:PORT, as connect.sh.
    "lookup.sh": (
        "nslookup \"$1\" 2>&1; echo \"nslookup $1 rc=$?\"\n"
        "shift\n"
        "for target in \"$@\"; do\n"
        "  nc -w 2 \"${target%:*}\" \"${target##*:}\" </dev/null 2>&1; echo \"nc $target rc=$?\"\n"
        "done\n"
    ),
    # $1 children, each holding a string of 2^$2 bytes for 10 s. The parent waits (a while at most) for each child's
    # mark, left once it holds its string, before the next fork; a failed fork ends the script and every child with
    # it, so the "held" lines are what the children held at the same time.
    "fork_memory.sh": (
        "echo \"processes: $(ulimit -u), data kB: $(ulimit -d)\"\n"
        "c=0\n"
        "while [ $c -lt \"$1\" ]; do\n"
        "  ( x=a; i=0; while [ $i -lt \"$2\" ]; do x=\"$x$x\"; i=$((i+1)); done\n"
        "    echo \"held ${#x}\"; : > /tmp/m$c; sleep 10 ) &\n"
        "  n=0; while [ ! -e /tmp/m$c ] && [ $n -lt 100000 ]; do n=$((n+1)); done\n"
        "  c=$((c+1))\n"
        "done\n"
        "echo \"all $1 children started\"\n"
    ),
}
