"""Services: protocol-independent logic the SMTP, IMAP and POP3 front-ends call
(recipient directory, the delivery pipeline, authentication, rate limits)."""
