"""The trajectory engine (layer 4): Numba kernels, the sector packs the kernels
read, accumulators and the stop rule, backends, workers, checkpoints, the
``mcsolve`` driver and population dynamics (``cloning``).

May import the exact solvers (``cloning`` reads the counting system), never the
other way round.
"""
