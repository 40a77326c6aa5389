"""Benchmarks of Orbited against its peers; see bench/README.md.  Never imported by orbited."""
