#!/usr/bin/env python3
"""Opens N HTTP/2 streams on one TLS connection, all asking for PATH, with
the client's flow-control windows wide open, and reads nothing for SECONDS.
What the server holds meanwhile is what one such client costs it
(watch VmHWM in /proc/PID/status).

    scripts/h2-open-streams.py HOST PORT N PATH [SECONDS]

Example: scripts/h2-open-streams.py 127.0.0.1 25224 500 /site/1m.bin 3
"""
import socket
import ssl
import struct
import sys
import time


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def get(path):
    # :method GET, :scheme https (indexed), :path and :authority literal (RFC 7541).
    return bytes([0x82, 0x87, 0x04, len(path)]) + path.encode() + bytes([0x01, 9]) + b"localhost"


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    host, port, n, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    conn = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost")
    if conn.selected_alpn_protocol() != "h2":
        sys.exit("the server did not choose h2")
    window = (1 << 31) - 1
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    out += frame(4, 0, 0, struct.pack(">HI", 4, window))  # SETTINGS_INITIAL_WINDOW_SIZE
    out += frame(8, 0, 0, struct.pack(">I", window - 65535))  # the connection's window
    for i in range(n):
        out += frame(1, 0x5, 1 + 2 * i, get(path))  # HEADERS, END_STREAM | END_HEADERS
    conn.sendall(out)
    time.sleep(seconds)
    print(f"opened {n} streams for {path}, read nothing for {seconds} s")


if __name__ == "__main__":
    main()
