"""Sends two messages to a running maild with Python's smtplib (a real client)."""
import smtplib
import sys
from email.message import EmailMessage

port = int(sys.argv[1])
with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
    code, _ = smtp.ehlo("pyclient")
    assert code == 250, code
    assert smtp.has_extn("pipelining") and smtp.has_extn("8bitmime") and smtp.has_extn("size")
    msg = EmailMessage()
    msg["From"] = "student@CS4410"
    msg["To"] = "TA@CS4410"
    msg["Subject"] = "from smtplib"
    msg.set_content("Network programming is fun\n.leading dot\n")
    refused = smtp.send_message(msg)
    assert refused == {}, refused
    try:
        smtp.sendmail("student@CS4410", ["nobody@CS4410"], "Subject: x\r\n\r\nx\r\n")
        raise SystemExit("an unknown user was accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients["nobody@CS4410"]
        assert code == 550 and b"User unknown" in text, (code, text)
    try:
        smtp.sendmail("student@CS4410", ["someone@elsewhere.example"], "x")
        raise SystemExit("relayed for an unauthenticated client")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients["someone@elsewhere.example"]
        assert code == 554 and b"Relay access denied" in text, (code, text)
    smtp.sendmail("student@CS4410", ["TA@CS4410", "student@CS4410"], b"Subject: two\r\n\r\n\xc3\xa9t\xc3\xa9\r\n")
print("ok")
