"""The matrix-free block generator and the solvers built on it (issue 12, item 2).

References: the assembled sparse block Liouvillian (``exact.liouvillian``, an
independent construction from Kronecker products and index triples), scipy's
``expm_multiply`` on it (``mesolve(method="expm")``), the sparse direct steady
state (``steadystate(method="direct")``) and the full 2^N-space Lindblad solver
of tests/test_general.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from test_general import PAIRS, random_model, reference_mesolve, table_dict

import thermospin_mc as tsm
from thermospin_mc.exact import blocks, blocksolve
from thermospin_mc.exact import solvers as exact
from thermospin_mc.exact._blockops import BlockGenerator, triangular_solve

OBS_ALL = ["j", "j_bond", "flow", "m", "n", "norm", "nn", "pm", "count"]

GEN_CASES = [  # (seed, N, kinds)
    (21, 4, ["loss", "pump", "dephasing"]),
    (22, 5, None),
    (23, 5, ["dephasing", "dephasing", "loss"]),
    (24, 6, ["pump", "loss", "pump"]),
    (25, 6, None),
    (26, 7, ["loss", "dephasing", "pump"]),
]


def _random_hermitian_blocks(layout, rng):
    x = np.zeros(layout.size, dtype=complex)
    for m in layout.sectors:
        d = layout.dims[m]
        A = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
        layout.block(x, m)[...] = A + A.conj().T
    return x


def _random_vector(rng, n):
    return rng.normal(size=n) + 1j * rng.normal(size=n)


@pytest.mark.parametrize("seed,N,kinds", GEN_CASES)
def test_generator_equals_assembled_liouvillian(seed, N, kinds):
    model = random_model(seed, N, kinds)
    L, layout = exact.liouvillian(model, sectors=list(range(N + 1)))
    gen = BlockGenerator(layout)
    rng = np.random.default_rng(seed)
    x = _random_vector(rng, layout.size)
    scale = np.abs(L @ x).max()
    np.testing.assert_allclose(gen.apply(x), L @ x, rtol=0, atol=1e-12 * scale)
    F = blocks.feed_generator(layout)
    np.testing.assert_allclose(gen.feed(x), F @ x, rtol=0, atol=1e-12 * scale)
    # Hermitian blocks: the one-product path
    for m in layout.sectors:
        B = layout.block(x, m)
        B[...] = B + B.conj().T
    np.testing.assert_allclose(gen.apply(x, hermitian=True), L @ x, rtol=0,
                               atol=1e-12 * scale)
    # the Chebyshev step: new = f (L - c) x + Hm, acc += w x, returns ||x||^2
    Hm, acc = _random_vector(rng, layout.size), _random_vector(rng, layout.size)
    acc0, new = acc.copy(), np.empty_like(x)
    nk = gen.chebyshev_step(x, Hm, new, 0.3, 0.7, acc, -1.25)
    np.testing.assert_allclose(new, 0.7 * (L @ x - 0.3 * x) + Hm, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(acc, acc0 - 1.25 * x, rtol=0, atol=1e-12)
    assert nk == pytest.approx(np.vdot(x, x).real, rel=1e-12)


@pytest.mark.parametrize("dm", [-1, 1])
def test_triangular_solve_inverts_nojump_plus_one_direction(dm):
    model = random_model(31, 5, ["loss", "pump", "loss", "dephasing"])
    layout = exact.BlockLayout(tsm.SectorSpace(model), list(range(6)))
    gen = BlockGenerator(layout)
    A = blocks.nojump_generator(layout)
    # assemble F_dm from the generator's own index maps applied to unit vectors would be
    # circular: take it from the assembled feeding, restricted to entries between blocks
    F = blocks.feed_generator(layout).tocoo()
    blk = np.searchsorted([layout.offsets[m] for m in layout.sectors], np.arange(layout.size),
                          side="right") - 1
    keep = (blk[F.row] - blk[F.col]) == dm
    Fdm = sp.csr_matrix((F.data[keep], (F.row[keep], F.col[keep])), shape=F.shape)
    y = _random_vector(np.random.default_rng(5), layout.size)
    x = triangular_solve(gen, blocksolve.NoJumpInverse(layout).solve_block, y, dm)
    np.testing.assert_allclose((A + Fdm) @ x, y, rtol=0, atol=1e-10 * np.abs(y).max())
    # and the rest of the jumps
    rest = blocks.feed_generator(layout) - Fdm
    np.testing.assert_allclose(gen.feed_except(y, dm), rest @ y, rtol=0, atol=1e-12)


MES_CASES = [  # (seed, N, kinds, initial)
    (41, 5, ["loss", "pump", "dephasing"], None),
    (42, 6, None, tsm.product_mixture([0.1, 0.7, 0.0, 1.0, 0.4, 0.5])),
    (43, 6, ["pump", "pump", "loss"], None),
    (44, 7, ["loss", "dephasing"], tsm.magnons(2, 6)),
    (45, 5, ["pump", "dephasing"], tsm.magnons(1)),
]


@pytest.mark.parametrize("seed,N,kinds,initial", MES_CASES)
def test_chebyshev_mesolve_agrees_with_expm(seed, N, kinds, initial):
    model = random_model(seed, N, kinds, initial)
    pairs = [p for p in PAIRS if max(p) <= N]
    # non-uniform, repeated, not starting at 0, long enough for several segments
    times = np.array([0.3, 0.3, 1.0, 2.2, 7.0, 7.05, 19.0])
    kw = dict(observables=OBS_ALL, pairs=pairs)
    ref = exact.mesolve(model, times, method="expm", **kw)
    got = exact.mesolve(model, times, method="chebyshev", **kw)
    assert got.metadata["method"] == "chebyshev"
    a, b = ref.expect["mean"].to_numpy(), got.expect["mean"].to_numpy()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * max(1.0, np.abs(a).max()))


def test_chebyshev_mesolve_uses_several_segments_and_matches_full_space():
    model = random_model(46, 5, ["loss", "pump", "dephasing", "loss"],
                         tsm.product_mixture([0.3, 0.6, 0.2, 0.5, 0.9]))
    pairs = [p for p in PAIRS if max(p) <= 5]
    times = np.array([0.0, 0.35, 1.1, 2.5, 30.0, 60.0])
    res = exact.mesolve(model, times, observables=OBS_ALL, pairs=pairs, method="chebyshev")
    assert res.metadata["segments"] >= 2
    got = table_dict(res)
    ref = reference_mesolve(model, times, pairs)
    for key, val in ref.items():
        np.testing.assert_allclose(got[key], val, rtol=0, atol=1e-8, err_msg=str(key))


def test_auto_method_switches_on_size():
    small = tsm.paper_model("pump", N=5)
    assert exact.mesolve(small, [0.0, 1.0]).metadata["method"] == "expm"
    big = tsm.paper_model("pump", N=8, pump_site=4)  # C(16, 8) = 12870 stored numbers
    size = exact.BlockLayout(tsm.SectorSpace(big), big.reachable_sectors()).size
    want = "expm" if size <= exact.CHEBYSHEV_MIN_SIZE else "chebyshev"
    assert exact.mesolve(big, [0.0, 0.5]).metadata["method"] == want
    with pytest.raises(ValueError, match="method must be"):
        exact.mesolve(small, [0.0, 1.0], method="rk4")


STEADY_CASES = [  # (seed, N, kinds)
    (51, 5, ["loss", "pump"]),
    (52, 5, ["pump", "pump", "loss", "dephasing"]),   # pump-dominated: upward sweep
    (53, 6, ["loss", "dephasing", "pump", "loss"]),
    (54, 6, None),
]


@pytest.mark.parametrize("seed,N,kinds", STEADY_CASES)
def test_gmres_steadystate_agrees_with_direct(seed, N, kinds):
    model = random_model(seed, N, kinds)
    pairs = [p for p in PAIRS if max(p) <= N]
    try:
        ref = exact.steadystate(model, method="direct", pairs=pairs)
    except ValueError as exc:  # not unique (no pump/loss pair): both must refuse
        with pytest.raises(ValueError, match=str(exc)[:20]):
            exact.steadystate(model, method="gmres", pairs=pairs)
        return
    got = exact.steadystate(model, method="gmres", pairs=pairs)
    assert got.metadata["residual"] < 1e-10
    a, b = ref.expect["mean"].to_numpy(), got.expect["mean"].to_numpy()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    for m, B in ref.blocks.items():
        np.testing.assert_allclose(got.blocks[m], B, rtol=0, atol=1e-10)


@pytest.mark.parametrize("seed,N,kinds", GEN_CASES[3:])
def test_chebyshev_step_threads_bit_identical(seed, N, kinds):
    # blocks shared out between threads: each block finished by one thread with
    # its incoming jumps in list order, so the step equals the one-thread step
    # bit for bit, and equals (L - c) applied by the assembled generator
    model = random_model(seed, N, kinds)
    L, layout = exact.liouvillian(model, sectors=list(range(N + 1)))
    rng = np.random.default_rng(seed)
    x = _random_hermitian_blocks(layout, rng)
    Hm = _random_vector(rng, layout.size)
    acc0 = _random_vector(rng, layout.size)
    outs = []
    for n in (1, 2, 3):
        gen = BlockGenerator(layout, n_jobs=n)
        assert len(gen.groups) == min(n, len(layout.sectors))
        new, acc = np.zeros_like(x), acc0.copy()
        nk = gen.chebyshev_step(x, Hm, new, -0.7, 0.3, acc, 0.9)
        outs.append((new, acc, nk))
    for new, acc, nk in outs[1:]:
        assert np.array_equal(new, outs[0][0]) and np.array_equal(acc, outs[0][1])
        assert nk == outs[0][2]
    ref = 0.3 * (L @ x + 0.7 * x) + Hm
    assert np.abs(outs[0][0] - ref).max() <= 1e-12 * np.abs(ref).max()
    np.testing.assert_allclose(outs[0][1], acc0 + 0.9 * x, rtol=0, atol=1e-14)
    assert abs(outs[0][2] - np.vdot(x, x).real) <= 1e-12 * outs[0][2]


def test_mesolve_chebyshev_repeatable():
    # the propagator's scale comes from Lanczos with a fixed start vector, so two
    # calls give the same numbers bit for bit (ARPACK's random start did not)
    model = tsm.paper_model("pump", N=8, pump_site=4)  # sectors above DENSE_DIM
    times = np.linspace(0.0, 1.0, 3)
    a = tsm.mesolve(model, times, method="chebyshev").expect["mean"].to_numpy()
    b = tsm.mesolve(model, times, method="chebyshev").expect["mean"].to_numpy()
    assert np.array_equal(a, b)


def test_no_jump_inverse_independent_of_threads():
    # decompositions run n_jobs blocks at a time with one LAPACK thread each:
    # the same numbers as one at a time, and each block solve inverts
    # X -> -i (H X - X H^+) (checked against the assembled no-jump generator)
    model = random_model(24, 6, ["pump", "loss", "pump"])
    _, layout = exact.liouvillian(model, sectors=list(range(7)))
    one = blocksolve.NoJumpInverse(layout, n_jobs=1)
    two = blocksolve.NoJumpInverse(layout, n_jobs=2)
    for m in layout.sectors:
        for a, b in zip(one.data[m][1:], two.data[m][1:], strict=True):
            assert b is None if a is None else np.array_equal(a, b)
    rng = np.random.default_rng(5)
    y = _random_vector(rng, layout.size)
    x = one.apply(y)
    A = blocks.nojump_generator(layout)
    assert np.abs(A @ x - y).max() <= 1e-10 * np.abs(y).max()


def test_hermitian_packing_is_an_isometry_of_hermitian_blocks():
    model = random_model(61, 5, ["loss", "pump", "dephasing"])
    layout = exact.BlockLayout(tsm.SectorSpace(model), list(range(6)))
    pack = blocksolve.HermitianPacking(layout)
    rng = np.random.default_rng(61)
    x, y = _random_hermitian_blocks(layout, rng), _random_hermitian_blocks(layout, rng)
    assert pack.is_hermitian(x)
    r = pack.pack(x)
    assert r.dtype == float and r.size == layout.size
    # the sqrt(2) scaling rounds: the round trip is exact to an ulp
    np.testing.assert_allclose(pack.unpack(r), x, rtol=4e-16, atol=0)
    # Euclidean products of packings = Frobenius products of the blocks (real here)
    np.testing.assert_allclose(r @ pack.pack(y), np.vdot(x, y).real, rtol=1e-13)
    assert abs(np.vdot(x, y).imag) < 1e-10 * abs(np.vdot(x, y))
    big = max(layout.sectors, key=lambda m: layout.dims[m])
    z = x.copy()
    layout.block(z, big)[0, -1] += 1e-6
    assert not pack.is_hermitian(z)
    z = x.copy()
    layout.block(z, big)[0, 0] += 1e-6j
    assert not pack.is_hermitian(z)


def test_bordered_solver_real_and_complex_paths_agree():
    # a Hermitian right-hand side runs GMRES on the real packing; with a
    # non-Hermitian part added it runs on complex vectors; both must solve the
    # bordered system given by the assembled Liouvillian
    model = random_model(62, 5, ["loss", "pump", "dephasing"])
    layout = exact.BlockLayout(tsm.SectorSpace(model), list(range(6)))
    solver = blocksolve.BorderedSolver(layout, model.channels, tol=1e-13)
    rng = np.random.default_rng(62)
    y_h = np.zeros(layout.size, dtype=complex)
    y_a = np.zeros(layout.size, dtype=complex)
    for m in layout.sectors:
        d = layout.dims[m]
        A = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
        layout.block(y_h, m)[...] = A + A.conj().T
        layout.block(y_a, m)[...] = A - A.T  # neither Hermitian nor anti-Hermitian
    x_h = solver.solve(y_h)
    x_sum = solver.solve(y_h + y_a)
    L, _ = exact.liouvillian(model, sectors=layout.sectors)
    e = solver.e
    tr = layout.trace()

    def apply(x):
        return L @ x + e * (tr @ x)

    for x, y in ((x_h, y_h), (x_sum, y_h + y_a)):
        assert np.linalg.norm(apply(x) - y) <= 1e-10 * np.linalg.norm(y)
    assert blocksolve.HermitianPacking(layout).is_hermitian(x_h)


@pytest.mark.parametrize("sigma", [0.0, 0.37])
def test_shifted_no_jump_inverse(sigma):
    # NoJumpInverse.apply solves -i (H X - X H^+) - sigma X = Y block by block (the
    # counting statistics' inverse iteration uses the shift), in eigen and Schur form
    model = random_model(63, 7, ["loss", "pump", "loss"])
    layout = exact.BlockLayout(tsm.SectorSpace(model), list(range(8)))
    A = blocks.nojump_generator(layout)
    y = _random_vector(np.random.default_rng(63), layout.size)
    for cond_limit in (1e8, 0.0):  # 0: every block in Schur form
        inv = blocksolve.NoJumpInverse(layout, cond_limit=cond_limit)
        assert {inv.data[m][0] for m in layout.sectors} == ({"eig"} if cond_limit else {"schur"})
        x = inv.apply(y, sigma)
        assert np.abs(A @ x - sigma * x - y).max() <= 1e-10 * np.abs(y).max()


@pytest.mark.parametrize("sigma", [0.0, 0.37])
def test_hermitian_no_jump_inverse(sigma):
    # the Hermitian path (triangular congruences, only the upper triangle of Y
    # read) solves the same equation as the general one: against the assembled
    # no-jump generator, with Hermitian solutions written into the given blocks
    model = random_model(64, 7, ["loss", "pump", "dephasing"])
    layout = exact.BlockLayout(tsm.SectorSpace(model), list(range(8)))
    A = blocks.nojump_generator(layout)
    rng = np.random.default_rng(64)
    y = np.zeros(layout.size, dtype=complex)
    for m in layout.sectors:
        Z = layout.block(y, m)
        Z[...] = _random_vector(rng, Z.size).reshape(Z.shape)
        Z[...] = Z + Z.conj().T
    pack = blocksolve.HermitianPacking(layout)
    for cond_limit in (1e8, 0.0):
        inv = blocksolve.NoJumpInverse(layout, cond_limit=cond_limit)
        x = inv.apply(y, sigma, hermitian=True)
        assert np.abs(A @ x - sigma * x - y).max() <= 1e-10 * np.abs(y).max()
        assert pack.is_hermitian(x)
        np.testing.assert_allclose(x, inv.apply(y, sigma), rtol=0, atol=1e-12 * np.abs(x).max())
        # the part below the diagonal is never read
        m = layout.sectors[4]
        Y = layout.block(y, m).copy()
        Y[np.tril_indices(Y.shape[0], -1)] = 7.0
        out = np.empty_like(Y)
        got = inv.solve_block(m, Y, sigma, out=out, hermitian=True)
        assert got is out
        np.testing.assert_allclose(out, layout.block(x, m), rtol=0, atol=1e-12 * np.abs(x).max())
