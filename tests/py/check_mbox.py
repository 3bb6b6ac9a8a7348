"""Reads an mbox (or a Maildir) with Python's mailbox module and checks its entries.

usage: check_mbox.py mbox|maildir PATH FIRST LAST
Entries must be messages FIRST..=LAST in order (by their Number: header; a Maildir is
sorted by it), each ending with the body the tests send: "body of message N\r\n".
"""
import mailbox
import sys

kind, path, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
box = mailbox.mbox(path) if kind == "mbox" else mailbox.Maildir(path, create=False)
keys = list(box.keys())
entries = [box.get_bytes(k) for k in keys]
if kind == "maildir":
    entries.sort(key=lambda b: int(b.split(b"\r\n", 1)[0].split(b":")[1]))
want = list(range(first, last + 1))
got = [int(mailbox.Message(e)["Number"]) for e in entries]
assert got == want, (got, want)
for n, entry in zip(want, entries):
    message = mailbox.Message(entry)
    assert message["Return-Path"] == "<s@d.test>", message["Return-Path"]
    assert message["Delivered-To"] == "u@d.test", message["Delivered-To"]
    assert message["Received"] is not None
    assert entry.endswith(b"\r\n\r\nbody of message %d\r\n" % n), entry[-80:]
print("ok", len(entries))
