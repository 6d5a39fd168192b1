"""Applications (layer 6, no physics of their own).

- The paper's figures: ``reproduce`` (names, computes and writes them),
  ``figures_paper`` (Figs. 2-6), ``figures_counting`` (the ``fcs`` and ``rare``
  sets), ``figure_settings`` (their sizes) and ``plotting`` (PNG panels).
- One vocabulary of flags and TOML keys: ``config`` gathers ``config_flags``
  (spelling, ``ConfigError``), ``config_toml`` (the file), ``config_model``
  (``[model]``), ``config_schedule`` (``[[stage]]``) and ``config_run`` (``[run]``).
- The ``thermospin-mc`` command line: ``cli`` (``run``, ``reproduce``, dispatch),
  ``cli_args`` (shared model flags, ``spectrum``), ``cli_jumps`` (gathers
  ``cli_stats``, ``cli_fcs`` and ``cli_rare``) and ``cli_counts`` (``--counts``).
"""
