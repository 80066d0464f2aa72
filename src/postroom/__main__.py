"""`python -m postroom` (and the `postroom` script) runs the CLI."""

from postroom import held_signal


def run() -> None:
    held_signal.hold()  # before the imports below, which take a second (see held_signal)
    from postroom.cli.app import main

    main()


if __name__ == "__main__":
    run()
