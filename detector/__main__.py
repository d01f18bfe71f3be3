"""`python -m detector PATH...`: see detector/cli.py."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
