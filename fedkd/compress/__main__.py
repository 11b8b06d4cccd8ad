"""``python -m fedkd.compress RUN_DIR``: see :mod:`fedkd.compress.cli`."""

from fedkd.compress.cli import main

if __name__ == "__main__":
    main()
