"""The IMAP command table: name -> (handler, states where it is valid)."""

from __future__ import annotations

from . import imap_auth as a
from . import imap_mailbox as mb
from . import imap_message as msg
from .imap import ANY, AUTH, NOT_AUTH, SELECTED, Handler, State

COMMANDS: dict[str, tuple[Handler, frozenset[State]]] = {
    "CAPABILITY": (a.cmd_capability, ANY),
    "NOOP": (a.cmd_noop, ANY),
    "LOGOUT": (a.cmd_logout, ANY),
    "ID": (a.cmd_id, ANY),
    "STARTTLS": (a.cmd_starttls, NOT_AUTH),
    "LOGIN": (a.cmd_login, NOT_AUTH),
    "AUTHENTICATE": (a.cmd_authenticate, NOT_AUTH),
    "ENABLE": (a.cmd_enable, AUTH),
    "COMPRESS": (a.cmd_compress, AUTH),
    "SELECT": (mb.cmd_select, AUTH),
    "EXAMINE": (mb.cmd_examine, AUTH),
    "CREATE": (mb.cmd_create, AUTH),
    "DELETE": (mb.cmd_delete, AUTH),
    "RENAME": (mb.cmd_rename, AUTH),
    "SUBSCRIBE": (mb.cmd_subscribe, AUTH),
    "UNSUBSCRIBE": (mb.cmd_unsubscribe, AUTH),
    "LIST": (mb.cmd_list, AUTH),
    "LSUB": (mb.cmd_lsub, AUTH),
    "NAMESPACE": (mb.cmd_namespace, AUTH),
    "STATUS": (mb.cmd_status, AUTH),
    "APPEND": (mb.cmd_append, AUTH),
    "IDLE": (msg.cmd_idle, AUTH),
    "GETQUOTA": (mb.cmd_getquota, AUTH),
    "GETQUOTAROOT": (mb.cmd_getquotaroot, AUTH),
    "SETQUOTA": (mb.cmd_setquota, AUTH),
    "CHECK": (a.cmd_noop, SELECTED),  # IMAP4rev1 §6.4.1; a checkpoint is a NOOP for us
    "CLOSE": (mb.cmd_close, SELECTED),
    "UNSELECT": (mb.cmd_unselect, SELECTED),
    "EXPUNGE": (msg.cmd_expunge, SELECTED),
    "SEARCH": (msg.cmd_search, SELECTED),
    "FETCH": (msg.cmd_fetch, SELECTED),
    "STORE": (msg.cmd_store, SELECTED),
    "COPY": (msg.cmd_copy, SELECTED),
    "MOVE": (msg.cmd_move, SELECTED),
}

UID_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"})
