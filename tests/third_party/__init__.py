"""Backends written as a third party would write them, from keyguard's public API only,
checked by the contract suites of ``keyguard.testing``."""
