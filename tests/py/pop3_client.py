"""Reads a maildrop with Python's poplib and checks it against what was sent.

usage: pop3_client.py PORT USER PASSWORD EXPECTED_DIR
EXPECTED_DIR holds files 1, 2, ... with the exact bytes RETR must return (Return-Path,
Received and the client's message), in maildrop order.
"""
import os
import poplib
import re
import sys

port, user, password, expected_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
expected = [open(os.path.join(expected_dir, str(i + 1)), "rb").read() for i in range(len(os.listdir(expected_dir)))]

pop = poplib.POP3("127.0.0.1", port, timeout=60)
caps = pop.capa()
for cap in ["TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL"]:
    assert cap in caps, (cap, caps)
assert "PLAIN" in caps["SASL"], caps
pop.user(user)
pop.pass_(password)
count, total = pop.stat()
assert count == len(expected), (count, len(expected))
assert total == sum(len(e) for e in expected), (total, [len(e) for e in expected])
listing = pop.list()[1]
for i, line in enumerate(listing):
    number, size = line.split()
    assert int(number) == i + 1 and int(size) == len(expected[i]), (line, len(expected[i]))
for i, want in enumerate(expected):
    _, lines, octets = pop.retr(i + 1)
    # poplib ends a line at LF and drops CRLF or LF, so compare lines cut the same way.
    assert lines == re.split(rb"\r?\n", want)[:-1], (i + 1, lines, want)
    _, head, _ = pop.top(i + 1, 0)
    header_block = want.split(b"\r\n\r\n", 1)[0]
    assert b"\r\n".join(head) == header_block + b"\r\n", (head, header_block)
uidls = [line.split()[1] for line in pop.uidl()[1]]
print("uidl", b" ".join(uidls).decode())
pop.quit()
print("ok")
