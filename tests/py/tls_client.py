"""STARTTLS (SMTP) and STLS (POP3) against a running maild, with Python's own clients.

usage: tls_client.py smtp PORT CAFILE        send one message over STARTTLS; prints "number N"
       tls_client.py inject PORT CAFILE      commands pipelined behind STARTTLS must be dropped
       tls_client.py garbage PORT            a failed handshake ends only that connection
       tls_client.py idle PORT CAFILE        idle inside TLS; prints "ready", then maild's next reply
       tls_client.py pop3 PORT CAFILE USER PASSWORD
                                             STLS, log in, print message 1 as "retr HEX"
       tls_client.py pop3-remote HOST PORT CAFILE USER PASSWORD
                                             from another host: no password before STLS;
                                             prints "stat N"

The certificate is checked against CAFILE, as a real client would (for 127.0.0.1, or mx.test
where a raw socket is wrapped).
"""
import poplib
import smtplib
import socket
import ssl
import sys


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def read_reply(sock_file):
    """One SMTP reply (all its lines), as text."""
    lines = []
    while True:
        line = sock_file.readline()
        if not line:
            raise SystemExit(f"connection closed after {lines!r}")
        lines.append(line.decode())
        if line[3:4] != b"-":
            return "".join(lines)


def smtp(port, cafile):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("tlsclient")
        assert client.has_extn("starttls"), client.esmtp_features
        code, text = client.starttls(context=context(cafile))
        assert code == 220, (code, text)
        assert client.sock.version() is not None
        client.ehlo("tlsclient")
        assert not client.has_extn("starttls"), "STARTTLS offered again inside TLS"
        code, text = client.docmd("STARTTLS")
        assert code == 503, (code, text)
        code, text = client.mail("s@d.test")
        assert code == 250, (code, text)
        code, text = client.rcpt("u@d.test")
        assert code == 250, (code, text)
        code, text = client.data(b"Subject: over tls\r\n\r\nsecret body\r\n")
        assert code == 250, (code, text)
        print("number", text.decode().rsplit(" ", 1)[1])


def inject(port, cafile):
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    plain = raw.makefile("rb")
    assert read_reply(plain).startswith("220 ")
    raw.sendall(b"EHLO x\r\n")
    assert "STARTTLS" in read_reply(plain)
    # An attacker in the middle appends commands to the client's STARTTLS packet.
    raw.sendall(b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<evil@d.test>\r\n")
    assert read_reply(plain).startswith("220 2.0.0"), "no 220 to STARTTLS"
    # Nothing must be left unread in the plain reader before the handshake.
    tls = context(cafile).wrap_socket(raw, server_hostname="mx.test")
    secure = tls.makefile("rb")
    tls.sendall(b"NOOP\r\n")
    first = read_reply(secure)
    assert first.startswith("250 2.0.0"), f"an injected command ran inside TLS: {first!r}"
    tls.sendall(b"RCPT TO:<u@d.test>\r\n")
    reply = read_reply(secure)
    assert reply.startswith("503 5.5.1 Error: send HELO/EHLO first"), reply
    tls.sendall(b"QUIT\r\n")
    assert read_reply(secure).startswith("221")
    print("ok")


def garbage(port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    plain = raw.makefile("rb")
    read_reply(plain)
    raw.sendall(b"EHLO x\r\n")
    read_reply(plain)
    raw.sendall(b"STARTTLS\r\n")
    assert read_reply(plain).startswith("220 ")
    # Not a TLS ClientHello: the server must give up on this connection.
    raw.sendall(b"EHLO this is not tls\r\n" * 4)
    rest = b""
    while True:
        chunk = raw.recv(4096)
        if not chunk:
            break
        rest += chunk
    assert b"250" not in rest, rest
    raw.close()
    # The server goes on serving others.
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        assert client.noop()[0] == 250
    print("ok")


def idle(port, cafile):
    """Sits idle inside TLS; prints "ready", then the next reply maild sends."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.starttls(context=context(cafile))
        client.ehlo("idler")
        print("ready", flush=True)
        print(read_reply(client.sock.makefile("rb")).strip(), flush=True)


def pop3(port, cafile, user, password):
    client = poplib.POP3("127.0.0.1", port, timeout=60)
    assert "STLS" in client.capa(), client.capa()
    client.stls(context=context(cafile))
    capabilities = client.capa()
    assert "STLS" not in capabilities, capabilities
    client.user(user)
    client.pass_(password)
    _, lines, _ = client.retr(1)
    print("retr", b"\r\n".join(lines).hex())
    client.quit()


def pop3_remote(host, port, cafile, user, password):
    client = poplib.POP3(host, port, timeout=60)
    capabilities = client.capa()
    assert "STLS" in capabilities, capabilities
    assert "USER" not in capabilities and "SASL" not in capabilities, capabilities
    for attempt in (lambda: client.user(user), lambda: client.pass_(password)):
        try:
            attempt()
            raise SystemExit("a password command was taken before STLS")
        except poplib.error_proto as error:
            assert str(error).startswith("b'-ERR [AUTH]"), error
    # The certificate names mx.test, not the namespace's address: check it against that.
    client.host = "mx.test"
    client.stls(context=context(cafile))
    capabilities = client.capa()
    assert "USER" in capabilities and "SASL" in capabilities, capabilities
    client.user(user)
    client.pass_(password)
    print("stat", client.stat()[0])
    client.quit()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "smtp":
        smtp(int(args[0]), args[1])
    elif command == "inject":
        inject(int(args[0]), args[1])
    elif command == "idle":
        idle(int(args[0]), args[1])
    elif command == "garbage":
        garbage(int(args[0]))
    elif command == "pop3-remote":
        pop3_remote(args[0], int(args[1]), args[2], args[3], args[4])
    elif command == "pop3":
        pop3(int(args[0]), args[1], args[2], args[3])
    else:
        raise SystemExit(f"unknown command {command}")
