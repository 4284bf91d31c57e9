"""Helpers for the tests and the benches, not used by the package itself: independent reference implementations
(`reference`) and writers of raw dataset trees in the datasets' real formats (`broden_raw`, which needs scipy)."""
