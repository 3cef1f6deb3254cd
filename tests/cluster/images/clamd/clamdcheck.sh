#!/bin/sh
# docker-compose.yml's healthcheck for clamd (the official image has a script of this
# name): healthy when clamd answers PING with PONG on its TCP port.
exec python3 -c '
import socket, sys
with socket.create_connection(("127.0.0.1", 3310), timeout=5) as s:
    s.sendall(b"zPING\0")
    sys.exit(0 if s.recv(16) == b"PONG\0" else 1)
'
