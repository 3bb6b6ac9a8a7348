"""An MX host whose STARTTLS is broken: it offers STARTTLS, answers 220, then hangs up.

usage: broken_tls_mx.py IP PORT OUTFILE
A relay must then connect again without TLS; that session is served plainly and each
message it sends is appended to OUTFILE as "RCPT <addr>..." lines, the data, and a line
"=== end". Prints "ready" once listening; exits when its stdin closes.
"""
import socket
import sys
import threading


def serve(conn, outfile, lock):
    conn.settimeout(60)
    reader = conn.makefile("rb")
    send = lambda text: conn.sendall(text.encode())
    send("220 broken.test ESMTP\r\n")
    rcpts = []
    while True:
        line = reader.readline()
        if not line:
            return
        verb = line.strip().split(b" ")[0].upper()
        if verb == b"EHLO":
            send("250-broken.test\r\n250 STARTTLS\r\n")
        elif verb == b"STARTTLS":
            send("220 go ahead\r\n")
            conn.close()
            return
        elif verb == b"MAIL":
            rcpts = []
            send("250 ok\r\n")
        elif verb == b"RCPT":
            rcpts.append(line.strip().decode(errors="replace"))
            send("250 ok\r\n")
        elif verb == b"DATA":
            send("354 go\r\n")
            data = b""
            while not data.endswith(b"\r\n.\r\n"):
                chunk = reader.readline()
                if not chunk:
                    return
                data += chunk
            with lock, open(outfile, "ab") as out:
                out.write("\n".join(rcpts).encode() + b"\n" + data + b"=== end\n")
            send("250 ok: queued\r\n")
        elif verb == b"QUIT":
            send("221 bye\r\n")
            conn.close()
            return
        else:
            send("250 ok\r\n")


def main():
    ip, port, outfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((ip, port))
    listener.listen(16)
    lock = threading.Lock()

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn, outfile, lock), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test goes away


if __name__ == "__main__":
    main()
