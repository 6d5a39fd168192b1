"""Refactor guard: fixed-seed tables equal the fingerprint stored before the re-cut.

See ``tests/fingerprint_cases.py``. Floats are compared to 1e-10 relative
(not bitwise) so that a different CPU or BLAS build, whose round-off differs
in the last bits, does not fail the test; on the machine that wrote the
fingerprint they agree bit for bit. Integer columns, jump channels and row
keys must match exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fingerprint_cases import PATH, fingerprint

RTOL, ATOL = 1e-10, 1e-13


@pytest.fixture(scope="module")
def now():
    return fingerprint()


@pytest.fixture(scope="module")
def stored():
    return json.loads(PATH.read_text())


def test_same_cases(now, stored):
    assert sorted(now) == sorted(stored)


@pytest.mark.parametrize("name", ["mc_pump", "mc_pump_threads", "mc_loss", "mc_general",
                                  "me_general", "ss_pump"])
def test_tables_unchanged(now, stored, name):
    a, b = now[name], stored[name]
    assert a["columns"] == b["columns"]
    assert a["keys"] == b["keys"]
    assert a["ntraj"] == b["ntraj"]
    assert a["meta_keys"] == b["meta_keys"]
    for col in ("mean", "sem"):
        np.testing.assert_allclose(a[col], b[col], rtol=RTOL, atol=ATOL, equal_nan=True)
    assert ("jumps" in a) == ("jumps" in b)
    if "jumps" in b:
        for col in ("traj", "channel", "site", "m_before"):
            assert a["jumps"][col] == b["jumps"][col]
        np.testing.assert_allclose(a["jumps"]["t"], b["jumps"]["t"], rtol=RTOL, atol=ATOL)


def test_exit_probabilities_unchanged(now, stored):
    assert now["exit_loss"]["index"] == stored["exit_loss"]["index"]
    np.testing.assert_allclose(now["exit_loss"]["values"], stored["exit_loss"]["values"],
                               rtol=RTOL, atol=ATOL)
