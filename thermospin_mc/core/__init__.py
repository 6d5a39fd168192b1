"""Sector data and shared definitions (layer 2): magnon-number sectors, the one
definition of every observable and error-bar rule, user operators, block
density matrices, the QuTiP export, and the immutable ``Result`` both solver
families return.

Imports ``physics`` and the top-level foundations, nothing of a solver.
"""
