"""IMAP4rev2 (RFC 9051) / IMAP4rev1 (RFC 3501) sans-IO core.

framer: bytes -> complete commands (lines plus literals); parser: commands -> values;
response: values -> bytes; bodystructure: ENVELOPE/BODYSTRUCTURE and sections;
fetch/search/selected: the pure parts of FETCH, SEARCH and mailbox-state tracking.
"""
