"""Applications (layer 6, no physics of their own): the paper's figures
(``reproduce``, ``plotting``), the one vocabulary of flags and TOML keys
(``config``) and the ``thermospin-mc`` command line (``cli``, ``cli_args``,
``cli_jumps``).
"""
