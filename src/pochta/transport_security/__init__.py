"""Outbound transport security: MTA-STS, DANE, TLS-RPT (issue 20)."""
