#!/usr/bin/env python3
"""Host-side peer for virtio_net under QEMU's `-netdev dgram` over unix
datagram sockets: every datagram is one Ethernet frame (no FCS, no vnet
header).

  net_peer.py DIR [--ip A.B.C.D] [--guest A.B.C.D] [--pings N]

Binds DIR/peer.sock (QEMU's remote.path) and sends to DIR/qemu.sock (its
local.path). It plays the guest's peer: answers ARP requests for --ip and
ICMP echo requests to it; once the guest has shown up (its first frame),
it ARPs for --guest and pings it N times with payloads of 56, 1000 and
1472 bytes (the largest in a 1514-byte frame), round robin, checking every
reply (addresses, checksums, id, sequence, payload). Before the pings it
sends two frames the guest must ignore (another unicast MAC; an unknown
EtherType). Prints `net-peer: ...` lines; exits 0 when every ping was
answered, 1 otherwise (or after 30 s without the guest).
"""
import os
import socket
import struct
import sys
import time

PEER_MAC = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip_bytes(s):
    return socket.inet_aton(s)


def main():
    args = sys.argv[1:]
    d = args.pop(0)
    opts = {"--ip": "10.0.2.2", "--guest": "10.0.2.15", "--pings": "3"}
    while args:
        k = args.pop(0)
        opts[k] = args.pop(0)
    my_ip, guest_ip = ip_bytes(opts["--ip"]), ip_bytes(opts["--guest"])
    pings = int(opts["--pings"])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(d, "peer.sock")
    if os.path.exists(path):
        os.unlink(path)
    sock.bind(path)
    qemu = os.path.join(d, "qemu.sock")
    state = {"guest_mac": None, "replies": {}, "seen": False, "served": 0}

    def send(frame):
        if len(frame) < 60:
            frame += b"\0" * (60 - len(frame))
        try:
            sock.sendto(frame, qemu)
        except OSError as e:  # QEMU not up yet
            print("net-peer: send failed: %s" % e)

    def ip_packet(dst_mac, dst_ip, proto, payload, ident=1):
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0,
                          64, proto, 0, my_ip, dst_ip)
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        return dst_mac + PEER_MAC + b"\x08\x00" + hdr + payload

    def arp(op, dst_mac, tha, tpa):
        body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, PEER_MAC, my_ip,
                           tha, tpa)
        return dst_mac + PEER_MAC + b"\x08\x06" + body

    def handle(f):
        if len(f) < 14:
            return
        if not state["seen"]:
            state["seen"] = True
            print("net-peer: guest %s appeared" % f[6:12].hex(":"))
        if f[0:6] not in (PEER_MAC, BCAST):
            return
        et = struct.unpack("!H", f[12:14])[0]
        if et == 0x0806:
            _, _, _, _, op, sha, spa, _, tpa = struct.unpack("!HHBBH6s4s6s4s", f[14:42])
            if op == 1 and tpa == my_ip:
                send(arp(2, sha, sha, spa))
            elif op == 2 and spa == guest_ip:
                state["guest_mac"] = sha
        elif et == 0x0800:
            ip = f[14:]
            ihl = (ip[0] & 15) * 4
            total = struct.unpack("!H", ip[2:4])[0]
            if csum(ip[:ihl]) != 0:
                print("net-peer: FAIL: bad ip header checksum from the guest")
                sys.exit(1)
            if ip[16:20] != my_ip or ip[9] != 1:
                return
            icmp = ip[ihl:total]
            if csum(icmp) != 0:
                print("net-peer: FAIL: bad icmp checksum from the guest")
                sys.exit(1)
            typ, code, _, ident, seq = struct.unpack("!BBHHH", icmp[:8])
            if typ == 8:
                reply = struct.pack("!BBHHH", 0, 0, 0, ident, seq) + icmp[8:]
                reply = reply[:2] + struct.pack("!H", csum(reply)) + reply[4:]
                send(ip_packet(f[6:12], ip[12:16], 1, reply))
                state["served"] += 1
            elif typ == 0 and ident == 0x7065:
                state["replies"][seq] = icmp[8:]

    def pump(until, cond):
        while time.time() < until and not cond():
            sock.settimeout(max(0.01, until - time.time()))
            try:
                f = sock.recv(65536)
            except socket.timeout:
                return
            handle(f)

    deadline = time.time() + 30
    pump(deadline, lambda: state["seen"])
    if not state["seen"]:
        print("net-peer: FAIL: the guest sent nothing within 30 s")
        return 1
    # Frames the guest must ignore.
    send(bytes.fromhex("020000000099") + PEER_MAC + b"\x08\x06" + b"\0" * 28)
    send(BCAST + PEER_MAC + b"\x88\xb5" + b"kindling" * 4)
    for _ in range(5):
        send(arp(1, BCAST, b"\0" * 6, guest_ip))
        pump(time.time() + 1, lambda: state["guest_mac"] is not None)
        if state["guest_mac"]:
            break
    if not state["guest_mac"]:
        print("net-peer: FAIL: no arp reply from the guest")
        return 1
    print("net-peer: guest arp reply %s" % state["guest_mac"].hex(":"))
    sizes = [56, 1000, 1472]
    ok = 0
    for seq in range(1, pings + 1):
        n = sizes[(seq - 1) % len(sizes)]
        payload = bytes((i * 7 + seq) & 0xFF for i in range(n))
        icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7065, seq) + payload
        icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
        send(ip_packet(state["guest_mac"], guest_ip, 1, icmp, ident=seq))
        pump(time.time() + 2, lambda: seq in state["replies"])
        got = state["replies"].get(seq)
        if got is None:
            print("net-peer: FAIL: no echo reply for seq %d (%d bytes)" % (seq, n))
            return 1
        if got != payload:
            print("net-peer: FAIL: echo reply %d has a different payload" % seq)
            return 1
        ok += 1
    print("net-peer: %d pings answered" % ok)
    # Keep answering the guest (its own ping may still be underway).
    pump(time.time() + 5, lambda: state["served"] >= 1)
    print("net-peer: answered %d echo requests from the guest" % state["served"])
    return 0 if state["served"] >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
