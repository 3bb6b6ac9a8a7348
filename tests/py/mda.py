"""A tiny MDA for fetchmail: appends the message on stdin to an mbox file."""
import mailbox
import sys

box = mailbox.mbox(sys.argv[1])
box.lock()
box.add(mailbox.mboxMessage(sys.stdin.buffer.read()))
box.flush()
box.unlock()
