"""The ``dicomguard`` command line (typer + rich). Commands only parse input and call the core."""
