"""The server's METADATA entries (RFC 5464 §3.2: mailbox name ``""``), as IMAP's
GETMETADATA and Sieve's ``servermetadata`` (RFC 5490) see them.

``/shared/...`` server entries are the administrator's: every user sees them, so no user
may set them (IMAP answers ``NO [NOPERM]``, server/imap_metadata.py); ``pochta metadata``
(metadata_cli.py) sets them, in the store as account ``ADMINISTRATOR``. ``/private/...``
server entries are each user's own. ``/shared/admin`` (§6.2.1: a URI to reach the
administrator) is ``[imap] admin_contact`` when that is set, else ``mailto:`` the
postmaster of the primary domain (``admin_contact_default``), unless the administrator
stored one.
"""

from __future__ import annotations

from ..storage.interfaces import MailStore

SERVER = 0  # the mailbox id of the server's own entries (interfaces_imap.py)
ADMINISTRATOR = 0  # the account id the administrator's entries are written as
ADMIN_ENTRY = "/shared/admin"
SHARED = "/shared/"


def is_admin_entry(entry: str) -> bool:
    """A server entry only the administrator sets: one every user sees."""
    return entry.lower().startswith(SHARED)


async def primary_domain(store: MailStore, hostname: str) -> str | None:
    """The local domain this server is named in (``mail.example.org`` -> ``example.org``,
    the longest that the host name is or ends with), else the first of ``pochta domain
    list``; None without local domains."""
    domains = await store.list_domains()
    host = hostname.lower().rstrip(".")
    named = [d for d in domains if host == d or host.endswith("." + d)]
    if named:
        return max(named, key=len)
    return domains[0] if domains else None


async def admin_contact_default(store: MailStore, configured: str, hostname: str
                                ) -> str | None:
    """``/shared/admin`` when the administrator stored none (RFC 5464 §6.2.1)."""
    if configured:
        return configured
    domain = await primary_domain(store, hostname)
    return f"mailto:postmaster@{domain}" if domain else None


async def server_entries(store: MailStore, account_id: int, configured: str,
                         hostname: str) -> dict[str, bytes]:
    """Every server entry ``account_id`` sees: its own ``/private/`` ones, the
    administrator's ``/shared/`` ones, and ``/shared/admin`` by default."""
    stored = await store.get_metadata(account_id, SERVER)
    if ADMIN_ENTRY not in stored:
        contact = await admin_contact_default(store, configured, hostname)
        if contact:
            stored[ADMIN_ENTRY] = contact.encode("utf-8")
    return stored
