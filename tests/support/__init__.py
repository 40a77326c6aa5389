"""Shared test machinery: free ports, real processes, real peers, a real browser."""
