"""proto/smtp."""
