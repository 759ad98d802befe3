"""Moving mail in and out: Maildir and mbox import, IMAP import, Maildir export, backup
and restore of a whole installation (``pochta import|export|backup|restore``)."""
