"""`make demo`: the embedded default run (not built yet)."""
import sys

if __name__ == "__main__":
    sys.exit("make demo: the demo run is not built yet; `make test` runs the test suite")
