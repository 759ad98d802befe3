"""The IMAP handler table: command name -> handler. The states where each command is
valid are the core's (``proto/imap/session.py``, ``COMMAND_STATES``); a test checks that
both tables name the same commands."""

from __future__ import annotations

from . import imap_acl as acl
from . import imap_auth as a
from . import imap_mailbox as mb
from . import imap_message as msg
from . import imap_metadata as md
from . import imap_notify as ntf
from . import imap_replace as rpl
from . import imap_sort as srt
from . import imap_urlauth as ua
from .imap_session import Handler

COMMANDS: dict[str, Handler] = {
    "CAPABILITY": a.cmd_capability,
    "NOOP": a.cmd_noop,
    "LOGOUT": a.cmd_logout,
    "ID": a.cmd_id,
    "STARTTLS": a.cmd_starttls,
    "LOGIN": a.cmd_login,
    "AUTHENTICATE": a.cmd_authenticate,
    "ENABLE": md.cmd_enable,  # imap_auth's, then METADATA's watch (RFC 5464 §4.1)
    "COMPRESS": a.cmd_compress,
    "SELECT": mb.cmd_select,
    "EXAMINE": mb.cmd_examine,
    "CREATE": mb.cmd_create,
    "DELETE": mb.cmd_delete,
    "RENAME": mb.cmd_rename,
    "SUBSCRIBE": mb.cmd_subscribe,
    "UNSUBSCRIBE": mb.cmd_unsubscribe,
    "LIST": mb.cmd_list,
    "LSUB": mb.cmd_lsub,
    "NAMESPACE": mb.cmd_namespace,
    "STATUS": mb.cmd_status,
    "APPEND": mb.cmd_append,
    "IDLE": msg.cmd_idle,
    "GETQUOTA": mb.cmd_getquota,
    "GETQUOTAROOT": mb.cmd_getquotaroot,
    "SETQUOTA": mb.cmd_setquota,
    "GETMETADATA": md.cmd_getmetadata,
    "SETMETADATA": md.cmd_setmetadata,
    "CHECK": a.cmd_noop,  # IMAP4rev1 §6.4.1; a checkpoint is a NOOP for us
    "CLOSE": mb.cmd_close,
    "UNSELECT": mb.cmd_unselect,
    "EXPUNGE": msg.cmd_expunge,
    "SEARCH": msg.cmd_search,
    "FETCH": msg.cmd_fetch,
    "STORE": msg.cmd_store,
    "COPY": msg.cmd_copy,
    "MOVE": msg.cmd_move,
    "REPLACE": rpl.cmd_replace,
    "CANCELUPDATE": msg.cmd_cancelupdate,
    "SORT": srt.cmd_sort,
    "THREAD": srt.cmd_thread,
    "GENURLAUTH": ua.cmd_genurlauth,
    "RESETKEY": ua.cmd_resetkey,
    "URLFETCH": ua.cmd_urlfetch,
    "SETACL": acl.cmd_setacl,
    "DELETEACL": acl.cmd_deleteacl,
    "GETACL": acl.cmd_getacl,
    "LISTRIGHTS": acl.cmd_listrights,
    "MYRIGHTS": acl.cmd_myrights,
    "NOTIFY": ntf.cmd_notify,
}
