"""Orbited: a Comet push server that tunnels browser sockets to TCP backends."""

__version__ = "1.0.0"
