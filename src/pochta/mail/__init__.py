"""Shared mail primitives: the one place each of them is written.

A leaf package: it imports only the Python standard library, so the sans-IO protocol
cores in ``pochta.proto`` may use it as well as the services and drivers above them.

* ``addresses``: address parsing and the one normalisation (lookup keys, logins).
"""
