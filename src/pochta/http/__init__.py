"""The HTTP listener role: a sans-IO HTTP/1.1 core (over h11) and its asyncio driver."""
