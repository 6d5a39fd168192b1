"""Physics inputs (layer 1): the exchange coefficients a(T) from the exact canonical
energy (``canonical``, ``thermal``), temperature profiles, initial states, jump
channels, the frozen ``ChainModel`` and the time-dependent ``Schedule``.

Imports only the top-level foundations (``_validate``, ``_threads``, ``signals``, ``io``).
"""
