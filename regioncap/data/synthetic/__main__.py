"""``python -m regioncap.data.synthetic``: see :mod:`regioncap.data.synthetic.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
