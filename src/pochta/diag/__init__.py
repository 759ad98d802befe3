"""Diagnostics: send, sink, probe, check, doctor, sasl-encode (docs/diagnostics.md)."""
