"""Allow ``python -m llmsim``."""

from llmsim.cli import main

if __name__ == "__main__":
    main()
