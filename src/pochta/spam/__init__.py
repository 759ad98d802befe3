"""Spam and abuse defence: connection screening (postscreen-like), greylisting, a learning
filter per account, rspamd and clamd clients, and compromised-account holds.

See docs/spam.md. The SMTP driver reaches all of it through ``spam.gate.SpamGate``.
"""
