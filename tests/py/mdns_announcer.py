"""A hostile mDNS announcer for the discovery tests (standard library only).

    python3 mdns_announcer.py [--key FILE] IFACE_ADDRESS INSTANCE ADDRESS PORT TXT...

Multicasts, from the interface holding IFACE_ADDRESS, an unsolicited mDNS answer that
announces INSTANCE._maild._tcp.local. at ADDRESS:PORT with the TXT strings given (e.g.
"domains=victim.test" "smtp=2525"): what any host on a LAN can send. With --key, it adds
a sig= over the given domains=, smtp=, addrs= and ts= as maild signs them
(daemon/signature.rs), to show what a valid signature does and does not allow. It repeats
the answer every half second, prints "announcing" after the first, and exits when its
stdin reaches end of file (the test keeps it as a pipe).
"""
import hashlib
import hmac
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dns_server import encode_name  # noqa: E402

SERVICE = "_maild._tcp.local."
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_SRV = 1, 12, 16, 33
CLASS_IN, CACHE_FLUSH = 1, 0x8000
TTL = 120


def record(name, rtype, rclass, rdata):
    return encode_name(name) + struct.pack("!HHIH", rtype, rclass, TTL, len(rdata)) + rdata


def answer(instance, address, port, txt):
    fullname = f"{instance}.{SERVICE}"
    host = f"{instance}.local."
    strings = b"".join(bytes([len(s)]) + s for s in (t.encode() for t in txt))
    records = [
        record(SERVICE, TYPE_PTR, CLASS_IN, encode_name(fullname)),
        record(fullname, TYPE_SRV, CLASS_IN | CACHE_FLUSH, struct.pack("!HHH", 0, 0, port) + encode_name(host)),
        record(fullname, TYPE_TXT, CLASS_IN | CACHE_FLUSH, strings),
        record(host, TYPE_A, CLASS_IN | CACHE_FLUSH, socket.inet_aton(address)),
    ]
    # A response (QR), authoritative (AA), no questions, the records as answers.
    return struct.pack("!HHHHHH", 0, 0x8400, 0, len(records), 0, 0) + b"".join(records)


def signature(key, txt):
    fields = dict(t.split("=", 1) for t in txt)
    message = "maild-discover-v1\n" + "".join(
        f"{name}={fields.get(name, '')}\n" for name in ("domains", "smtp", "addrs", "ts"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def main():
    args = sys.argv[1:]
    key = None
    if args[0] == "--key":
        with open(args[1], "rb") as f:
            key = f.read().rstrip()
        args = args[2:]
    iface_address, instance, address, port, txt = args[0], args[1], args[2], int(args[3]), args[4:]
    if key is not None:
        txt.append("sig=" + signature(key, txt))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface_address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    # RFC 6762 §6: mDNS answers come from port 5353 (receivers may ignore others).
    sock.bind(("0.0.0.0", 5353))
    packet = answer(instance, address, port, txt)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    first = True
    while not done.is_set():
        sock.sendto(packet, ("224.0.0.251", 5353))
        if first:
            print("announcing", flush=True)
            first = False
        time.sleep(0.5)


if __name__ == "__main__":
    main()
