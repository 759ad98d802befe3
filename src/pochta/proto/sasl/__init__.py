"""proto/sasl."""
