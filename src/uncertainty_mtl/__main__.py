"""``python -m uncertainty_mtl`` is the ``umtl`` command."""

from uncertainty_mtl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
