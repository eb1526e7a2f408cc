"""The ``monosemantic`` command's subcommands: one module each, thin layers over the library."""
