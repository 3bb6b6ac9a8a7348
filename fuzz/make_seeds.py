#!/usr/bin/env python3
"""Writes the hand-made seed inputs into corpus/<target>/seed-*.

Run from fuzz/ (`python3 make_seeds.py`); the fuzzer grows the corpus from these. The
SMTP seeds include every client stream of tests/dialogues/. The layouts are described in
each target's header comment and in README.md.
"""
import base64
import glob
import os
import re
import struct

TLS = b"\n<tls>\n"


def session(flags, chunks, stream):
    return bytes([flags, len(chunks)]) + bytes(chunks) + stream


def unescape(text):
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        n = text[i + 1]
        i += 2
        if n == "x":
            out.append(int(text[i:i + 2], 16))
            i += 2
        else:
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}[n]
    return bytes(out)


def dialogue_stream(path):
    out = b""
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("C: "):
            out += line[3:].encode() + b"\r\n"
        elif line.startswith("C> "):
            out += unescape(line[3:])
    return out


def plain(user, password):
    return base64.b64encode(b"\0" + user + b"\0" + password)


def write(target, seeds):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for name, data in seeds.items():
        with open(f"corpus/{target}/seed-{name}", "wb") as f:
            f.write(data)


smtp = {}
for path in sorted(glob.glob("../tests/dialogues/*.txt")):
    name = os.path.basename(path)[:-4]
    stream = dialogue_stream(path)
    smtp[f"dialogue-{name}-whole"] = session(0, [], stream)
    smtp[f"dialogue-{name}-bytes"] = session(0, [1], stream)
    smtp[f"dialogue-{name}-mixed"] = session(0, [3, 0, 17, 1, 64], stream)
txn = (b"EHLO c\r\nMAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<bo@example.org>\r\n"
       b"RCPT TO:<x@peer.test>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<r@remote.test>\r\nDATA\r\n"
       b"Subject: s\r\n\r\n..dot\r\n.\r\n")
smtp["starttls"] = session(1, [5, 2], b"EHLO c\r\nSTARTTLS\r\nEHLO injected\r\n" + TLS + txn + b"STARTTLS\r\nQUIT\r\n")
smtp["submission-auth-plain"] = session(
    3, [7], b"EHLO c\r\nSTARTTLS\r\n" + TLS + b"EHLO c\r\nAUTH PLAIN " + plain(b"a@example.org", b"pw") + b"\r\n" + txn)
smtp["submission-auth-login"] = session(
    2, [1, 2, 3], b"EHLO c\r\nAUTH LOGIN\r\n" + base64.b64encode(b"a@example.org") + b"\r\n"
    + base64.b64encode(b"pw") + b"\r\n" + txn + b"AUTH PLAIN\r\n" + plain(b"u", b"slow") + b"\r\nAUTH PLAIN\r\n*\r\n")
smtp["limits"] = session(0b11100, [9], txn * 3 + b"MAIL FROM:<>\r\nRCPT TO:<a@b>\r\n" * 6 + b"x" * 600 + b"\r\n")
smtp["bare-lf-data"] = session(0, [2], b"HELO c\nMAIL FROM:<a@b>\nRCPT TO:<aa@example.org>\nDATA\nx\n.\nx\r\n.\r\n")
write("smtp_session", smtp)

pop = {}
login = b"USER alice@d.test\r\nPASS pw\r\n"
txn = b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\nRETR 1\r\nTOP 3 1\r\nTOP 1 0\r\nDELE 2\r\nDELE 2\r\nRSET\r\nDELE 1\r\nNOOP\r\nQUIT\r\n"
pop["user-pass"] = session(0, [], b"CAPA\r\n" + login + txn)
pop["user-pass-bytes"] = session(2, [1], login + txn)
pop["auth-plain"] = session(2, [4, 1], b"AUTH PLAIN " + plain(b"alice", b"pw") + b"\r\nRETR 3\r\nDELE 3\r\nQUIT\r\n")
pop["auth-continuation"] = session(2, [3], b"AUTH PLAIN\r\n" + plain(b"b", b"empty") + b"\r\nSTAT\r\nQUIT\r\n"
                                   + b"AUTH PLAIN\r\n*\r\nAUTH\r\n")
pop["stls"] = session(1, [6], b"CAPA\r\nSTLS\r\nUSER injected\r\n" + TLS + b"CAPA\r\nSTLS\r\n" + login + txn)
pop["failures"] = session(2, [5, 0, 3], b"USER a\r\nPASS locked\r\nUSER a\r\nPASS down\r\nUSER a\r\nPASS slow\r\n"
                          b"PASS x\r\nUSER a\r\nPASS wrong\r\n" + b"y" * 300 + b"\r\nQUIT\r\n")
write("pop3_session", pop)

write("smtp_client", {
    "greeting-ehlo": b"\x03\x40\x05\x01220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
                     b"250-8BITMIME\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n",
    # The whole round: a transaction, a probe, STARTTLS, AUTH, a refused transaction, QUIT.
    "session": b"\x00220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
               b"250 2.1.0 Ok\r\n550 5.1.1 <a@b>: no\r\n250 ok\r\n354 go\r\n250 2.0.0 queued\r\n"
               b"250 ok\r\n451-4.3.0 try\n451 later\r\n250 reset\r\n"
               b"220 go ahead\r\n250-mx.test\r\n250 AUTH PLAIN\r\n235 2.7.0 ok\r\n"
               b"451 4.3.0 busy\r\n503 no\r\n503 no\r\n503 no\r\n250 reset\r\n221 bye\r\n",
    "malformed": b"\x01\x02250-a\r\n251 b\r\n",
})

write("pop3_client", {
    "pipelined-session": b"\x02\x03\x05+OK maild ready\r\n+OK\r\n+OK logged in\r\n+OK 2 300\r\n+OK\r\n"
                         b"1 100\r\n2 200\r\n.\r\n+OK 100 octets\r\nReturn-Path: <a@b>\r\n\r\n..dot\r\n.\r\n"
                         b"+OK deleted\r\n-ERR no such message\r\n+OK bye\r\n",
})

# Admin frames: R (rkyv request), O, P, D, F. The request payload was made with
# engine::admin::frame::encode_request(&Request::Stats); a Verify request is rkyv bytes
# of the enum tag. Others are left to the fuzzer.
def frame(tag, payload):
    return tag + struct.pack(">I", len(payload)) + payload

write("admin_frame", {
    "frames": frame(b"O", b"hello\n") + frame(b"P", struct.pack(">QQ", 5, 10) + b"export")
              + frame(b"F", b"no") + frame(b"D", b""),
    "short-progress": frame(b"P", b"1234"),
})

# A backup range file of two entries, as engine::mbox::write_entry writes them.
write("mbox_reader", {
    "range-file": b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nNumber: 1\r\nReturn-Path: <>\r\n"
                  b"Delivered-To: a@x\r\nReceived: t\r\nSubject: s\r\n\r\n>From here\r\n>>From there\r\n"
                  b"not From\r\n\nFrom a@b Thu Jan  1 00:00:01 1970\nNumber: 2\r\nReturn-Path: <a@b>\r\n"
                  b"Received: t\r\n\r\nno newline\n\n",
})

# Journal: [n] then n frames' values (a length byte each), then trailing bytes: a stale
# magic with zeros (what a restart leaves behind the new frames), and nothing at all.
write("journal", {
    "three-frames-and-a-stale-magic": bytes([3, 5]) + b"hello" + bytes([0, 2]) + b"ab" + b"MJ1\n" + bytes(20),
    "seven-empty-frames": bytes([7, 0, 0, 0, 0, 0, 0, 0]),
})
