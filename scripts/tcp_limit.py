#!/usr/bin/env python3
"""The practical limit for scripts/bench's migration figures: seconds to
send MIB MiB over one plain TCP connection from hostA to hostB.

    tcp_limit.py HOSTS_SCRIPT MIB     (run "on" hostB: scripts/hosts exec hostB ...)
"""
import socket
import subprocess
import sys
import time

SENDER = """
import socket, sys
s = socket.create_connection(("10.77.0.2", 7999))
b = bytes(1 << 20)
for _ in range(int(sys.argv[1])):
    s.sendall(b)
s.close()
"""


def main():
    hosts, mib = sys.argv[1], int(sys.argv[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("10.77.0.2", 7999))
    listener.listen()
    sender = subprocess.Popen([hosts, "exec", "hostA", sys.executable, "-c", SENDER, str(mib)])
    conn, _ = listener.accept()
    t0 = time.monotonic()
    n = 0
    while True:
        d = conn.recv(1 << 20)
        if not d:
            break
        n += len(d)
    took = time.monotonic() - t0
    sender.wait()
    if n != mib << 20:
        sys.exit(f"tcp_limit: received {n} bytes of {mib << 20}")
    print(f"{took:.3f}")


if __name__ == "__main__":
    main()
