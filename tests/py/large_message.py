#!/usr/bin/env python3
"""A large message through smtplib and back through poplib.

    large_message.py send PORT SIZE_MIB          prints "number N"
    large_message.py retr PORT USER PASSWORD MSG SIZE_MIB
        RETR MSG must end with the body `send` made, LIST must give its exact size,
        and TOP MSG 0 must give the header block alone; prints "ok".

The body is made the same way both times: numbered lines, with lines that begin with a
dot (dot-stuffing both ways) and with "From " among them.
"""
import hashlib
import poplib
import smtplib
import sys


def body(size_mib):
    lines = [b"Subject: large", b"From: s@d.test", b""]
    size = 0
    i = 0
    while size < size_mib << 20:
        if i % 1000 == 7:
            line = b".a line that begins with a dot %d" % i
        elif i % 1000 == 500:
            line = b"From here on, line %d" % i
        else:
            line = b"%08d " % i + b"x" * 90
        lines.append(line)
        size += len(line) + 2
        i += 1
    return b"\r\n".join(lines) + b"\r\n"


def send(port, size_mib):
    message = body(size_mib)
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
        smtp.ehlo("x")
        smtp.mail("s@d.test")
        code, _ = smtp.rcpt("u@d.test")
        assert code == 250, code
        code, reply = smtp.data(message)
        assert code == 250, (code, reply)
    print("number", reply.split()[-1].decode())
    print("sha256", hashlib.sha256(message).hexdigest())


def retr(port, user, password, number, size_mib):
    expected = body(size_mib)
    pop = poplib.POP3("127.0.0.1", port, timeout=120)
    pop.user(user)
    pop.pass_(password)
    listed = int(pop.list(number).split()[2])
    _, lines, octets = pop.retr(number)
    got = b"\r\n".join(lines) + b"\r\n"
    assert got.startswith(b"Return-Path: <s@d.test>\r\nReceived: "), got[:200]
    assert got.endswith(expected), "RETR does not end with the message as sent"
    assert len(got) == listed, (len(got), listed)
    _, top, _ = pop.top(number, 0)
    header = b"\r\n".join(top)
    assert header.endswith(b"Subject: large\r\nFrom: s@d.test\r\n"), header[-200:]
    pop.quit()
    print("ok", listed, octets)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(int(sys.argv[2]), int(sys.argv[3]))
    else:
        retr(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
