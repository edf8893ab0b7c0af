"""`python -m attd_cli`: the same program as `attd`."""

from attd_cli.app import main

if __name__ == "__main__":
    main()
