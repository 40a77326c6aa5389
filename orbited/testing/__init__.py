"""Servers and tools for conformance suites and tests; not used by the daemon itself."""
