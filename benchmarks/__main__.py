"""``python -m benchmarks``: run every family, print the table, write the JSON file."""

from .run import main

if __name__ == "__main__":  # a spawned child re-imports this module as __mp_main__
    main()
