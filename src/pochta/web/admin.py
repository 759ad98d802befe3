def register(router: object, ctx: object) -> None:
    """The web admin (added below)."""
