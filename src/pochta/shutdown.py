"""The signal that the server is stopping, shared by the listener (which raises it) and
whatever reads from a connection below the server layer (the spam gate's greet wait)."""


class ServerShutdown(Exception):
    """Raised by ``Connection.read`` when the server is stopping: the session ends at a
    point where it was waiting for the client, never in the middle of storing mail."""
