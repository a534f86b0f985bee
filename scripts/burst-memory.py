#!/usr/bin/env python3
"""Memory a node keeps after bursts: what each connection holds once a burst has passed.

usage: scripts/burst-memory.py PORT PAIRS BURST SERVER_PID

Against a `switchboard serve` on 127.0.0.1:PORT with open token issuance: PAIRS rooms of
two, where one peer sends the other BURST 2 KB offers back to back; once every offer has
arrived, prints the server's RSS growth per pair (read from /proc/SERVER_PID/status).
Plain sockets, no dependencies beyond Python 3.
"""
import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.request

port, pairs, burst, pid = (int(a) for a in sys.argv[1:5])


def token(user):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/token",
        data=json.dumps({"userId": user}).encode(),
        headers={"Content-Type": "application/json"},
    )
    reply = json.load(urllib.request.urlopen(request))
    return reply["token"], reply["peerId"]


def connect(jwt):
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/signal?token={jwt} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    status = head.split(b"\r\n")[0]
    if b" 101 " not in status:
        sys.exit(f"upgrade refused: {status.decode()}")
    return sock


def send(sock, text):
    data = text.encode()
    mask = os.urandom(4)
    size = len(data)
    header = bytes([0x81]) + (
        bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + struct.pack(">H", size)
    )
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def rss():
    with open(f"/proc/{pid}/status") as status:
        line = next(l for l in status if l.startswith("VmRSS"))
    return int(line.split()[1]) * 1024


rooms = []
for i in range(pairs):
    (receiver_token, receiver_id), (sender_token, _) = token(f"r{i}"), token(f"s{i}")
    receiver = connect(receiver_token)
    send(receiver, json.dumps({"type": "join", "roomId": f"room{i}"}))
    sender = connect(sender_token)
    send(sender, json.dumps({"type": "join", "roomId": f"room{i}"}))
    rooms.append((receiver, sender, receiver_id))
time.sleep(2)
before = rss()
sdp = "v=0 " + "x" * 2040
for receiver, sender, receiver_id in rooms:
    for _ in range(burst):
        send(sender, json.dumps({"type": "offer", "peerId": receiver_id, "sdp": sdp}))
for receiver, _, _ in rooms:
    got, deadline = b"", time.time() + 20
    while got.count(b'"offer"') < burst and time.time() < deadline:
        got += receiver.recv(1 << 20)
    if got.count(b'"offer"') < burst:
        sys.exit("not every offer arrived within 20 s")
time.sleep(2)
after = rss()
print(
    f"{pairs} pairs, bursts of {burst} offers: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB,"
    f" {(after - before) / pairs:.0f} B per pair after the bursts"
)
