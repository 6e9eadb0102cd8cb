"""Allow ``python -m llmsim``."""

from llmsim.cli.main import main

if __name__ == "__main__":
    main()
