"""The TCPSocket transports: /ws (WebSocket), /sockjs (SockJS) and /tcp (Orbited 0.7's Comet).

A regular package: without this file setuptools' ``find_packages`` skipped the
directory, and a wheel (``pip install .``, not ``-e``) shipped Orbited without
its transports.
"""
