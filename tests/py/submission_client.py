"""Submission (SMTP AUTH, RFC 4954) against a running maild with Python's smtplib.

usage: submission_client.py PORT USER PASSWORD RCPT...
Checks that MAIL needs AUTH, that a wrong password gets 535, that AUTH LOGIN and
AUTH PLAIN both work, that the user cannot send as someone else, then sends one
message from USER to every RCPT and prints "number N".
"""
import smtplib
import sys

port, user, password, recipients = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]

with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
    smtp.ehlo("submitter")
    assert smtp.has_extn("auth"), smtp.esmtp_features
    mechanisms = smtp.esmtp_features["auth"].split()
    assert "PLAIN" in mechanisms and "LOGIN" in mechanisms, mechanisms
    code, text = smtp.mail(user)
    assert code == 530, (code, text)
    try:
        smtp.login(user, password + "-wrong")
        raise SystemExit("a wrong password was accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e

# AUTH LOGIN, on its own connection.
with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
    smtp.ehlo("submitter")
    smtp.user, smtp.password = user, password
    code, text = smtp.auth("LOGIN", smtp.auth_login)
    assert code == 235, (code, text)

with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
    smtp.ehlo("submitter")
    code, text = smtp.login(user, password)  # AUTH PLAIN, smtplib's first choice here
    assert code == 235, (code, text)
    try:
        smtp.sendmail("someone.else@" + user.split("@")[1], recipients, b"Subject: forged\r\n\r\nx\r\n")
        raise SystemExit("sent as another user")
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 553, e
    code, text = smtp.mail(user)
    assert code == 250, (code, text)
    for rcpt in recipients:
        code, text = smtp.rcpt(rcpt)
        assert code == 250, (rcpt, code, text)
    code, text = smtp.data(b"Subject: submitted\r\n\r\nsent with AUTH\r\n")
    assert code == 250, (code, text)
    print("number", text.decode().rsplit(" ", 1)[1])
