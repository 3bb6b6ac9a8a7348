"""A small authoritative DNS server for the integration tests (standard library only).

    python3 dns_server.py ZONEFILE

Binds UDP and TCP on 127.0.0.1 with one free port, prints "port N" on stdout, then
answers from the zone until it is killed or its stdin reaches end of file: a test keeps
the server's stdin as a pipe, so the server dies with the test even if the test never
kills it. (Started with stdin from /dev/null, it exits at once.)

ZONEFILE is JSON; every key is optional:

    {"mx":   {"remote.test": [[10, "mx1.remote.test"], [20, "backup.remote.test"]],
              "nullmx.test": [[0, "."]]},
     "a":    {"mx1.remote.test": ["127.0.0.2"]},
     "aaaa": {"mx1.remote.test": ["::1"]},
     "empty":    ["nodata.test"],     names that exist with no records at all
     "servfail": ["broken.test"],     names answered with SERVFAIL
     "silent":   ["slow.test"]}       names never answered (the client times out)

Names match without regard to case or a trailing dot. A name exists if it owns a record
or lies above one (an empty non-terminal, RFC 8020): it gets NOERROR, with no answer when
it lacks the asked type; any other name gets NXDOMAIN. The server never recurses and never
refuses. Over UDP an answer longer than 512 octets is cut to the question with TC set, so
the client asks again over TCP (2-octet length framing, RFC 1035 §4.2.2).

Every query received is written to stderr as a line "QTYPE name", e.g. "MX remote.test.".
"""
import json
import socket
import struct
import sys
import threading

TYPES = {"A": 1, "MX": 15, "AAAA": 28}
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
              28: "AAAA", 33: "SRV", 41: "OPT", 255: "ANY"}
CLASS_IN = 1
TTL = 60
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
# RFC 1035 §2.3.4: the largest UDP message without EDNS. We do not speak EDNS, so this is
# the limit even when the query offers more.
UDP_LIMIT = 512
# A TCP client that stops talking is dropped after this long, so threads do not pile up.
TCP_IDLE_SECONDS = 10


def normalise(name):
    return name.strip().lower().rstrip(".")


class Zone:
    def __init__(self, data):
        if not isinstance(data, dict):
            raise ValueError("the zone must be a JSON object")
        # name -> qtype -> list of RDATA (bytes), in the zone file's order.
        self.records = {}
        for owner, exchanges in data.get("mx", {}).items():
            for preference, exchange in exchanges:
                rdata = struct.pack("!H", int(preference)) + encode_name(exchange)
                self.add(owner, TYPES["MX"], rdata)
        for owner, addresses in data.get("a", {}).items():
            for address in addresses:
                self.add(owner, TYPES["A"], socket.inet_pton(socket.AF_INET, address))
        for owner, addresses in data.get("aaaa", {}).items():
            for address in addresses:
                self.add(owner, TYPES["AAAA"], socket.inet_pton(socket.AF_INET6, address))
        for owner in data.get("empty", []):
            self.records.setdefault(normalise(owner), {})
        self.servfail = {normalise(name) for name in data.get("servfail", [])}
        self.silent = {normalise(name) for name in data.get("silent", [])}
        # Every owner and every name above one exists (RFC 8020 empty non-terminals).
        self.existing = set()
        for owner in self.records:
            labels = owner.split(".") if owner else []
            for start in range(len(labels) + 1):
                self.existing.add(".".join(labels[start:]))

    def add(self, owner, qtype, rdata):
        self.records.setdefault(normalise(owner), {}).setdefault(qtype, []).append(rdata)

    def lookup(self, name, qtype):
        """(rcode, [rdata]) for a query, or None to stay silent."""
        name = normalise(name)
        if name in self.silent:
            return None
        if name in self.servfail:
            return SERVFAIL, []
        if name not in self.existing:
            return NXDOMAIN, []
        return NOERROR, list(self.records.get(name, {}).get(qtype, []))


def encode_name(name):
    """Wire form of a dotted name; "." and "" are the root."""
    encoded = b""
    for label in normalise(name).split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise ValueError(f"label too long in {name!r}")
        encoded += bytes([len(raw)]) + raw
    if len(encoded) + 1 > 255:
        raise ValueError(f"name too long: {name!r}")
    return encoded + b"\x00"


class Malformed(Exception):
    pass


def decode_name(message, offset):
    """(dotted name with a trailing dot, offset after the name). Follows compression
    pointers, but only backwards and a bounded number of times."""
    labels = []
    end = None
    jumps = 0
    length_so_far = 0
    while True:
        if offset >= len(message):
            raise Malformed("name runs past the end")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise Malformed("truncated pointer")
            target = ((length & 0x3F) << 8) | message[offset + 1]
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > 16 or target >= offset:
                raise Malformed("bad compression pointer")
            offset = target
            continue
        if length & 0xC0:
            raise Malformed("unknown label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(message):
            raise Malformed("label runs past the end")
        labels.append(message[offset:offset + length].decode("latin-1"))
        length_so_far += length + 1
        if length_so_far > 255:
            raise Malformed("name too long")
        offset += length
    return ".".join(labels) + ".", (end if end is not None else offset)


def respond(zone, query, limit):
    """The response to one query message, or None to send nothing."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:
        return None  # a response, not a query: never answer those (no loops)
    opcode = (flags >> 11) & 0xF
    recursion_desired = flags & 0x0100

    def header(rcode, answers, truncated=False, question_count=1):
        out_flags = 0x8000 | (opcode << 11) | 0x0400 | recursion_desired | rcode
        if truncated:
            out_flags |= 0x0200
        return struct.pack("!HHHHHH", ident, out_flags, question_count, answers, 0, 0)

    if qdcount != 1:
        log(f"FORMERR ({qdcount} questions)")
        return header(FORMERR, 0, question_count=0)
    try:
        name, offset = decode_name(query, 12)
        if offset + 4 > len(query):
            raise Malformed("question runs past the end")
        qtype, qclass = struct.unpack("!HH", query[offset:offset + 4])
    except Malformed as error:
        log(f"FORMERR ({error})")
        return header(FORMERR, 0, question_count=0)
    question = query[12:offset + 4]
    log(f"{TYPE_NAMES.get(qtype, f'TYPE{qtype}')} {name}")
    if opcode != 0:
        return header(NOTIMP, 0) + question
    if qclass not in (CLASS_IN, 255):
        return header(NOERROR, 0) + question
    found = zone.lookup(name, qtype)
    if found is None:
        return None
    rcode, rdatas = found
    # Each answer names its owner by a pointer to the question's name, at offset 12.
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, qtype, CLASS_IN, TTL, len(rdata)) + rdata
        for rdata in rdatas
    )
    response = header(rcode, len(rdatas)) + question + answers
    if len(response) > limit:
        return header(rcode, 0, truncated=True) + question
    return response


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def serve_udp(zone, udp):
    while True:
        try:
            query, peer = udp.recvfrom(65535)
        except OSError:
            continue
        try:
            response = respond(zone, query, UDP_LIMIT)
        except Exception as error:  # a bug must not take the server down mid-test
            log(f"error: {error!r}")
            continue
        if response is not None:
            try:
                udp.sendto(response, peer)
            except OSError:
                pass


def read_exactly(connection, count):
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve_tcp_connection(zone, connection):
    with connection:
        connection.settimeout(TCP_IDLE_SECONDS)
        try:
            while True:
                prefix = read_exactly(connection, 2)
                if prefix is None:
                    return
                (length,) = struct.unpack("!H", prefix)
                query = read_exactly(connection, length)
                if query is None:
                    return
                response = respond(zone, query, 65535)
                if response is None:
                    continue  # silent: the client times out
                connection.sendall(struct.pack("!H", len(response)) + response)
        except Exception as error:
            log(f"tcp connection closed: {error!r}")


def serve_tcp(zone, tcp):
    while True:
        try:
            connection, _ = tcp.accept()
        except OSError:
            continue
        threading.Thread(target=serve_tcp_connection, args=(zone, connection), daemon=True).start()


def bind_both():
    """UDP on a free port, then TCP on the same one; another port if TCP's is taken."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
            tcp.listen(16)
            return udp, tcp, port
        except OSError:
            udp.close()
            tcp.close()
    raise SystemExit("no port free for both UDP and TCP")


def exit_when_stdin_closes():
    """Returns only to exit: the parent closed our stdin, or went away."""
    if sys.stdin is None:
        return
    try:
        while sys.stdin.buffer.read1(4096):
            pass
    except OSError:
        pass


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: dns_server.py ZONEFILE")
    with open(sys.argv[1], encoding="utf-8") as file:
        zone = Zone(json.load(file))
    udp, tcp, port = bind_both()
    threading.Thread(target=serve_udp, args=(zone, udp), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(zone, tcp), daemon=True).start()
    print(f"port {port}", flush=True)
    exit_when_stdin_closes()
    # The serving threads are daemons: returning from main ends the process.


if __name__ == "__main__":
    main()
