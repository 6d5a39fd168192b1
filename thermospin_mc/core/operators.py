"""User operators on the chain: words, dense matrices and QuTiP objects in sector form.

An :class:`Operator` is a linear combination of *operator words* (docs/model.md
section 12): a product of factors, one letter and a 1-based site each, on
distinct sites: ``x``, ``y``, ``z`` (Pauli matrices), ``+`` (``s+ = |up><down|``),
``-`` (``s- = |down><up|``) and ``n`` (``|down><down|``). ``"x1 x3"`` is
``sigma^x_1 sigma^x_3``; the empty word ``""`` is the identity.

Every state the engine produces is block diagonal in the magnon number ``m``
(the number of down spins), so only the parts of an operator that change ``m``
by one fixed amount (its *offset*) can matter. A word is expanded into
elementary words of the letters ``z, n, +, -`` (``x = s+ + s-``,
``y = -i s+ + i s-``); each elementary word changes ``m`` by
``#(-) - #(+)``. If all elementary words share one offset, the operator keeps
it (``"+1 -3"``, ``"z2"``: 0; ``"+3"``: -1; ``"-3"``: +1). If they mix
offsets, the operator is reduced to its magnon-conserving part
``O_c = sum_m P_m O P_m`` (offset 0) and :attr:`Operator.dropped_norm` is the
Frobenius norm (in the full ``2^N`` space) of what was dropped.

The operator acts on the sectors through :meth:`Operator.sector_matrix`: a
sparse matrix from sector ``m`` to sector ``m + offset`` in the sector basis
(colexicographic order of the down-site sets, :mod:`thermospin_mc.sectors`).
Words never form a ``2^N`` object: ``"z1 z101"`` at ``N = 101`` works.
Operators given as dense matrices or QuTiP objects (``N <= 14``) are split into
the same sector blocks once, on construction.

Full-space order (dense matrices, QuTiP objects, :meth:`Operator.to_dense`):
the tensor product of sites ``1..N`` with site 1 the leftmost factor; on one
site index 0 is ``|up>`` and index 1 is ``|down>``, so the configuration with
down spins on the (1-based) sites ``S`` has the index ``sum_{i in S} 2^(N - i)``.

Length: about 700 lines, above the ~500 guideline: one immutable class with two
representations (words; sector blocks of a matrix) that share its attributes,
plus the word grammar (:meth:`Operator.parse`, the command line's syntax) and the
Frobenius norm of the dropped part; split, they would share private details.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import types
from math import comb

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["Operator", "SectorBasis", "LETTERS", "MAX_DENSE_N", "MAX_EXPANSION", "require_qutip",
           "colex_rank", "sector_sites", "full_indices", "check_name"]

#: Letters of operator words.
LETTERS = ("x", "y", "z", "+", "-", "n")
#: Largest chain whose full 2^N matrices (from_dense, from_qutip, to_dense, to_qutip)
#: are accepted.
MAX_DENSE_N = 14
#: Most elementary words one word may expand to (2 per x or y factor).
MAX_EXPANSION = 1 << 20

_FACTOR = re.compile(r"\s*([A-Za-z+\-])(\d+)\s*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# x = s+ + s-, y = -i s+ + i s-; z, n, +, - are elementary
_EXPAND = {"x": (("+", 1.0), ("-", 1.0)), "y": (("+", -1j), ("-", 1j)),
           "z": (("z", 1.0),), "n": (("n", 1.0),), "+": (("+", 1.0),), "-": (("-", 1.0),)}
_TOL = 1e-13


def require_qutip():
    """Import and return :mod:`qutip`, or raise one clear ``ImportError``."""
    try:
        import qutip
    except ImportError:
        raise ImportError("QuTiP is not installed; pip install qutip (an optional "
                          "dependency of thermospin_mc)") from None
    return qutip


def check_name(name) -> str:
    """Validate an operator name (a letter, then letters, digits or ``_``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be a letter followed by letters, digits or '_', "
                         f"got {name!r}")
    return name


# ---------------------------------------------------------------------------- sector bases
def colex_rank(sites: np.ndarray) -> np.ndarray:
    """Colex rank (the sector basis index) of each row of sorted 0-based ``sites``."""
    sites = np.asarray(sites, dtype=np.int64)
    r = np.zeros(sites.shape[0], dtype=np.int64)
    for k in range(sites.shape[1]):
        col = np.array([comb(int(c), k + 1) for c in range(int(sites[:, k].max()) + 1)]
                       if sites.shape[0] else [0], dtype=np.int64)
        r += col[sites[:, k]]
    return r


def _full_tables(N: int) -> tuple[np.ndarray, np.ndarray]:
    """``(magnons, rank)`` of every full-space index ``0..2^N - 1`` (docs/model.md 13 order)."""
    idx = np.arange(1 << N, dtype=np.int64)
    count = np.zeros(idx.size, dtype=np.int64)
    rank = np.zeros(idx.size, dtype=np.int64)
    for s in range(N):  # 0-based site s is bit N - 1 - s; ascending sites give colex ranks
        down = (idx >> (N - 1 - s)) & 1
        binom = np.array([comb(s, k + 1) for k in range(N + 1)], dtype=np.int64)
        rank += down * binom[count]
        count += down
    return count, rank


def full_indices(N: int, m: int) -> np.ndarray:
    """Full-space indices of the basis states of sector ``m``, in sector basis order."""
    count, rank = _full_tables(N)
    idx = np.flatnonzero(count == m)
    return idx[np.argsort(rank[idx], kind="stable")]


def sector_sites(N: int, m: int) -> np.ndarray:
    """``(C(N, m), m)`` 0-based down sites of sector ``m`` in basis (colex) order."""
    if m == 0:
        return np.zeros((1, 0), dtype=np.int64)
    sites = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(N), m)),
                        dtype=np.int64, count=comb(N, m) * m).reshape(-1, m)
    return sites[np.argsort(colex_rank(sites), kind="stable")]


class SectorBasis:
    """The sector bases of an ``N``-site chain without a model: what
    :meth:`Operator.sector_matrix` needs (``N``, ``sector(m).sites``, ``rank``),
    for block states and full-space conversions. Bases are cached per ``m``."""

    def __init__(self, N: int):
        self.N = int(N)
        self._sites: dict[int, types.SimpleNamespace] = {}

    def dim(self, m: int) -> int:
        return comb(self.N, m)

    def rank(self, sites: np.ndarray) -> np.ndarray:
        return colex_rank(sites)

    def sector(self, m: int) -> types.SimpleNamespace:
        """``sector(m).sites``: ``(C(N, m), m)`` 0-based down sites in basis order."""
        if m not in self._sites:
            self._sites[m] = types.SimpleNamespace(m=m, sites=sector_sites(self.N, m))
        return self._sites[m]

    def basis(self, m: int) -> np.ndarray:
        """1-based down sites of every basis state of sector ``m``, in basis order."""
        return self.sector(m).sites + 1


# ---------------------------------------------------------------------------- words
def _parse_word(word, N: int, arg: str) -> tuple:
    """``((site0, letter), ...)`` sorted by site, of one word (validated)."""
    if not isinstance(word, str):
        raise ValueError(f"{arg}: each word must be a string like 'x1 z3', got {word!r}")
    pos, factors = 0, []
    text = word.strip()
    while pos < len(text):
        mt = _FACTOR.match(text, pos)
        if mt is None:
            raise ValueError(f"{arg}: cannot read word {word!r} at {text[pos:]!r}; a factor "
                             f"is one letter of {' '.join(LETTERS)} and a 1-based site")
        letter, site = mt.group(1), int(mt.group(2))
        if letter not in LETTERS:
            raise ValueError(f"{arg}: unknown letter {letter!r} in word {word!r}; allowed: "
                             f"{', '.join(LETTERS)}")
        if not 1 <= site <= N:
            raise ValueError(f"{arg}: site {site} of word {word!r} is outside 1..{N}")
        factors.append((site - 1, letter))
        pos = mt.end()
    sites = [s for s, _ in factors]
    if len(set(sites)) != len(sites):
        dup = sorted({s + 1 for s in sites if sites.count(s) > 1})
        raise ValueError(f"{arg}: site {dup[0]} is repeated in word {word!r}; a word has one "
                         "factor per site")
    return tuple(sorted(factors))


def _expand(factors: tuple, coef: complex, arg: str, word: str) -> list[tuple[tuple, complex]]:
    """Elementary words (letters z, n, +, -) of one word with their coefficients."""
    nsplit = sum(1 for _, c in factors if c in "xy")
    if (1 << nsplit) > MAX_EXPANSION:
        raise ValueError(f"{arg}: word {word!r} has {nsplit} x/y factors; at most "
                         f"{MAX_EXPANSION.bit_length() - 1} are supported")
    out = []
    for choice in itertools.product(*(_EXPAND[c] for _, c in factors)):
        w = tuple((s, ch[0]) for (s, _), ch in zip(factors, choice, strict=True))
        out.append((w, coef * complex(np.prod([ch[1] for ch in choice]))))
    return out


def _offset(word: tuple) -> int:
    return sum(1 if c == "-" else -1 if c == "+" else 0 for _, c in word)


def _word_text(word: tuple) -> str:
    return " ".join(f"{c}{s + 1}" for s, c in word)


def _scaled_norm2(words: dict) -> float:
    """``||O||_F^2 / 2^N`` in the full 2^N space of ``{elementary word: coef}``.

    ``n = (1 - z)/2`` is expanded so that the words are products of the
    orthogonal one-site basis ``1, z, s+, s-`` (squared norms 2, 2, 1, 1):
    ``||O||_F^2 = sum_w |c_w|^2 2^(N - #(+) - #(-))``.
    """
    canon: dict = {}
    for w, c in words.items():
        nsites = [i for i, (_, l) in enumerate(w) if l == "n"]
        for pick in itertools.product((0, 1), repeat=len(nsites)):
            lets = dict(enumerate(l for _, l in w))
            amp = c
            for i, p in zip(nsites, pick, strict=True):
                lets[i] = "z" if p else "1"
                amp = amp * (-0.5 if p else 0.5)
            key = tuple((s, lets[i]) for i, (s, _) in enumerate(w) if lets[i] != "1")
            canon[key] = canon.get(key, 0.0) + amp
    total = 0.0
    for w, c in canon.items():
        moves = sum(1 for _, l in w if l in "+-")
        total += abs(c) ** 2 * 2.0 ** (-moves)
    return total


def _full_norm(scaled2: float, N: int) -> float:
    """``sqrt(scaled2 * 2^N)`` (``inf`` where it exceeds the float range)."""
    if scaled2 == 0.0:
        return 0.0
    exponent = math.log2(scaled2) + N
    if exponent < 1020:
        return math.sqrt(math.ldexp(scaled2, N))
    return math.inf if exponent >= 2046 else math.sqrt(scaled2) * 2.0 ** (N / 2)


def _dagger_words(words: dict) -> dict:
    swap = {"+": "-", "-": "+"}
    return {tuple((s, swap.get(c, c)) for s, c in w): np.conj(v) for w, v in words.items()}


def _words_matrix(words: dict, N: int, m: int, d: int, sites: np.ndarray, rank,
                  ) -> sp.csr_matrix:
    """Sector matrix of elementary words (offset ``d``) from sector ``m`` (``sites``)."""
    dim = sites.shape[0]
    rows, cols, vals = [], [], []
    occ_cache: dict[int, np.ndarray] = {}

    def occ(s):
        if s not in occ_cache:
            occ_cache[s] = (sites == s).any(axis=1) if m else np.zeros(dim, dtype=bool)
        return occ_cache[s]

    for w, c in words.items():
        mask = np.ones(dim, dtype=bool)
        amp = np.full(dim, c, dtype=complex)
        plus, minus = [], []
        for s, l in w:
            if l == "z":
                amp = amp * np.where(occ(s), -1.0, 1.0)
            elif l == "n":
                mask &= occ(s)
            elif l == "+":
                mask &= occ(s)
                plus.append(s)
            else:
                mask &= ~occ(s)
                minus.append(s)
        src = np.flatnonzero(mask)
        if not src.size:
            continue
        if plus or minus:
            r = sites[src]
            if plus:
                r = r[~np.isin(r, plus)].reshape(src.size, m - len(plus))
            if minus:
                r = np.sort(np.concatenate([r, np.tile(minus, (src.size, 1))], axis=1), axis=1)
            dst = rank(r) if r.shape[1] else np.zeros(src.size, dtype=np.int64)
        else:
            dst = src
        rows.append(dst)
        cols.append(src)
        vals.append(amp[src])
    shape = (comb(N, m + d), dim)
    if not rows:
        return sp.csr_matrix(shape, dtype=complex)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=shape)


# ---------------------------------------------------------------------------- Operator
class Operator:
    """An operator on the chain, kept in magnon-sector form (immutable).

    Build one with :meth:`from_terms`, :meth:`parse`, :meth:`from_dense` or
    :meth:`from_qutip`; ``Operator(terms, N, name)`` is :meth:`from_terms`.

    Attributes
    ----------
    name : str
        Its table name (rows ``name``, or ``name_re`` and ``name_im`` for a
        non-Hermitian operator).
    N : int
        Number of sites.
    offset : int
        Change of the magnon number: ``+1`` for ``s-``, ``-1`` for ``s+``, 0 for a
        conserving operator (and for every operator reduced to its conserving part).
    dropped_norm : float
        Frobenius norm (full ``2^N`` space) of the non-conserving part dropped
        on construction; 0.0 if nothing was dropped.
    hermitian : bool
        Whether the kept part is Hermitian (relative tolerance 1e-13 in the
        Frobenius norm).
    norm_bound : float
        An upper bound of the spectral norm of the kept part (sum of ``|coef|``
        over its elementary words; for a matrix, the largest norm of its sector
        blocks).
    terms : dict or None
        The kept part as ``{word: coef}`` in the letters ``z, n, +, -`` (after
        expanding ``x`` and ``y``); ``None`` for an operator built from a matrix.
    """

    __slots__ = ("name", "N", "offset", "dropped_norm", "hermitian", "norm_bound",
                 "_words", "_blocks", "_cache")

    def __init__(self, terms, N: int, name: str = "op"):
        op = Operator.from_terms(terms, N, name)
        for k in Operator.__slots__:
            object.__setattr__(self, k, getattr(op, k))

    # ------------------------------------------------------------------ construction
    @classmethod
    def _make(cls, name, N, offset, dropped, hermitian, bound, words=None, blocks=None):
        op = object.__new__(cls)
        for k, val in (("name", name), ("N", int(N)), ("offset", int(offset)),
                       ("dropped_norm", float(dropped)), ("hermitian", bool(hermitian)),
                       ("norm_bound", float(bound)), ("_words", words), ("_blocks", blocks),
                       ("_cache", {})):
            object.__setattr__(op, k, val)
        return op

    def __setattr__(self, key, value):
        raise AttributeError("Operator is immutable")

    def __delattr__(self, key):
        raise AttributeError("Operator is immutable")

    def __reduce__(self):
        return (_rebuild, (self.name, self.N, self.offset, self.dropped_norm, self.hermitian,
                           self.norm_bound, self._words, self._blocks))

    @classmethod
    def from_terms(cls, terms, N: int, name: str = "op") -> Operator:
        """An operator from ``{word: coefficient}``.

        Parameters
        ----------
        terms : dict of str to complex
            Words (e.g. ``"x1 x3"``, ``"+2 -5"``, ``"z4"``; ``""`` is the identity)
            and their (real or complex, finite) coefficients.
        N : int
            Number of sites (sites of the words are 1-based, in ``1..N``).
        name : str
            The table name.

        Raises
        ------
        ValueError
            One line naming ``terms``, ``N`` or ``name``: an unknown letter, a site
            outside ``1..N``, a site repeated in one word, a bad coefficient.
        """
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 2:
            raise ValueError(f"N must be an integer >= 2, got {N!r}")
        N = int(N)
        name = check_name(name)
        if not isinstance(terms, dict):
            raise ValueError(f"terms must be a dict {{word: coefficient}}, got "
                             f"{type(terms).__name__}")
        if not terms:
            raise ValueError("terms must hold at least one word")
        elementary: dict[tuple, complex] = {}
        for word, coef in terms.items():
            factors = _parse_word(word, N, "terms")
            if isinstance(coef, bool) or not isinstance(coef, (int, float, complex, np.number)):
                raise ValueError(f"terms: the coefficient of {word!r} must be a number, "
                                 f"got {coef!r}")
            coef = complex(coef)
            if not (math.isfinite(coef.real) and math.isfinite(coef.imag)):
                raise ValueError(f"terms: the coefficient of {word!r} must be finite, got "
                                 f"{coef}")
            for w, c in _expand(factors, coef, "terms", word):
                elementary[w] = elementary.get(w, 0.0) + c
        by_offset: dict[int, dict] = {}
        for w, c in elementary.items():
            if c != 0:
                by_offset.setdefault(_offset(w), {})[w] = c
        if len(by_offset) == 1:
            offset = next(iter(by_offset))
        else:
            offset = 0
        kept = by_offset.pop(offset, {})
        dropped = _full_norm(sum(_scaled_norm2(ws) for ws in by_offset.values()), N)
        diff = dict(kept)
        for w, c in _dagger_words(kept).items():
            diff[w] = diff.get(w, 0.0) - c
        scale = math.sqrt(_scaled_norm2(kept))
        hermitian = offset == 0 and math.sqrt(_scaled_norm2(diff)) <= _TOL * max(scale, 1e-300)
        bound = sum(abs(c) for c in kept.values())
        return cls._make(name, N, offset, dropped, hermitian, bound, words=kept)

    @classmethod
    def parse(cls, text: str, N: int, name: str = "op") -> Operator:
        """An operator from a sum of words, e.g. ``'x1 x3 + 0.5*z2 - 2*+1 -3'``.

        Terms are separated by a ``+`` or ``-`` standing alone (spaces on both
        sides); a term is an optional coefficient joined to its first factor by
        ``*`` (a Python number without spaces: ``0.5``, ``-2``, ``1j``,
        ``(1+2j)``) and a word (factors separated by spaces; ``+1`` is ``s+_1``,
        ``-3`` is ``s-_3``). A coefficient alone is a multiple of the identity.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string like 'x1 x3 + 0.5*z2', "
                             f"got {text!r}")
        terms: dict[str, complex] = {}
        sign, coef, word, started, signed = 1.0, None, [], False, False

        def flush():
            if not started:
                raise ValueError(f"text: a '+' or '-' without a term in {text!r}")
            key = " ".join(word)
            c = sign * (1.0 if coef is None else coef)
            terms[key] = terms.get(key, 0.0) + c

        for tok in text.split():
            if tok in ("+", "-"):
                if started:
                    flush()
                elif signed:
                    raise ValueError(f"text: a '+' or '-' without a term in {text!r}")
                sign, coef, word, started = (1.0 if tok == "+" else -1.0), None, [], False
                signed = True
                continue
            if "*" in tok:
                head, _, tail = tok.rpartition("*")
                if word or coef is not None:
                    raise ValueError(f"text: a coefficient must come first in its term, got "
                                     f"{tok!r} in {text!r}")
                coef = _number(head, text)
                tok = tail
            elif _FACTOR.fullmatch(tok) is None:
                if word or coef is not None:
                    raise ValueError(f"text: cannot read {tok!r} in {text!r}; a factor is one "
                                     f"letter of {' '.join(LETTERS)} and a 1-based site")
                coef, started = _number(tok, text), True
                continue
            word.append(tok)
            started = True
        flush()
        try:
            return cls.from_terms(terms, N, name)
        except ValueError as exc:
            raise ValueError(str(exc).replace("terms:", "text:", 1)) from None

    @classmethod
    def from_dense(cls, matrix, name: str = "op") -> Operator:
        """An operator from a ``2^N x 2^N`` matrix (ndarray or scipy sparse), ``N <= 14``.

        The matrix is read in the full-space order of docs/model.md section 13 (see
        the module docstring) and split into sector blocks once.
        """
        name = check_name(name)
        if sp.issparse(matrix):
            mat = sp.coo_matrix(matrix)
            shape = mat.shape
        else:
            try:
                arr = np.asarray(matrix, dtype=complex)
            except (TypeError, ValueError):
                raise ValueError(f"matrix must be a 2^N x 2^N array or scipy sparse matrix, "
                                 f"got {type(matrix).__name__}") from None
            shape = arr.shape
            if arr.ndim == 2:
                mat = sp.coo_matrix(arr)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"matrix must be square 2^N x 2^N, got shape {tuple(shape)}")
        size = int(shape[0])
        N = size.bit_length() - 1
        if size < 4 or size != 1 << N:
            raise ValueError(f"matrix must be 2^N x 2^N with N >= 2, got {size} x {size}")
        if N > MAX_DENSE_N:
            raise ValueError(f"matrix: N = {N} is above {MAX_DENSE_N}; build operators of "
                             "longer chains from words (Operator.from_terms)")
        data = mat.data.astype(complex)
        if not np.all(np.isfinite(data)):
            raise ValueError("matrix must contain only finite values")
        keep = data != 0
        r, c, data = mat.row[keep].astype(np.int64), mat.col[keep].astype(np.int64), data[keep]
        count, rank = _full_tables(N)
        d = count[r] - count[c]
        offsets = np.unique(d)
        offset = int(offsets[0]) if offsets.size == 1 else 0
        dropped = float(np.linalg.norm(data[d != offset]))
        sel = d == offset
        r, c, data = r[sel], c[sel], data[sel]
        blocks = {}
        for m in range(max(0, -offset), min(N, N - offset) + 1):
            s = count[c] == m
            blocks[m] = sp.csr_matrix((data[s], (rank[r[s]], rank[c[s]])),
                                      shape=(comb(N, m + offset), comb(N, m)))
        fro = float(np.linalg.norm(data))
        herm = offset == 0 and math.sqrt(sum(
            spla.norm(b - b.conj().T) ** 2 for b in blocks.values())) <= _TOL * max(
                fro, 1e-300)
        return cls._make(name, N, offset, dropped, herm, _block_norm_bound(blocks),
                         blocks=blocks)

    @classmethod
    def from_qutip(cls, qobj, name: str = "op") -> Operator:
        """An operator from a QuTiP ``Qobj`` with dims ``[[2]*N, [2]*N]``, ``N <= 14``."""
        qutip = require_qutip()
        if not isinstance(qobj, qutip.Qobj):
            raise ValueError(f"qobj must be a qutip.Qobj, got {type(qobj).__name__}")
        shape = tuple(qobj.shape)
        if shape[0] != shape[1] or not qobj.isoper:
            raise ValueError(f"qobj must be a square operator, got shape {shape}")
        dims = [list(x) for x in qobj.dims]
        N = len(dims[0])
        if dims != [[2] * N, [2] * N] or N < 2:
            raise ValueError(f"qobj must have dims [[2]*N, [2]*N] (N >= 2 spins), got {dims}")
        if N > MAX_DENSE_N:
            raise ValueError(f"qobj: N = {N} is above {MAX_DENSE_N}; build operators of "
                             "longer chains from words (Operator.from_terms)")
        try:
            mat = qobj.to("csr").data_as("csr_matrix")
        except AttributeError:  # QuTiP 4
            mat = qobj.data
        return cls.from_dense(mat, name)

    # ------------------------------------------------------------------ properties
    @property
    def terms(self) -> dict | None:
        if self._words is None:
            return None
        return {_word_text(w): complex(c) for w, c in self._words.items()}

    def __repr__(self):
        kind = "words" if self._words is not None else "matrix"
        return (f"Operator(name={self.name!r}, N={self.N}, offset={self.offset}, "
                f"hermitian={self.hermitian}, dropped_norm={self.dropped_norm:.3g}, "
                f"from {kind})")

    def to_dict(self) -> dict:
        """JSON-able record of the operator (result metadata, checkpoint identity).

        ``{"name", "N", "offset", "hermitian", "norm_bound", "dropped_norm",
        "terms", "digest"}``: ``terms`` lists the kept elementary words as
        ``[word, re, im]`` in a canonical order (``None`` for an operator built
        from a matrix); ``digest`` is a SHA-256 of the kept part (its sector
        blocks for a matrix, its canonical terms for words), so equal inputs give
        equal records.
        """
        if self._words is not None:
            terms = [[_word_text(w), float(np.real(c)), float(np.imag(c))]
                     for w, c in sorted(self._words.items(), key=lambda wc: _sort_key(wc[0]))]
            blob = json.dumps(terms).encode()
        else:
            terms = None
            h = hashlib.sha256()
            for m in sorted(self._blocks):
                b = self._blocks[m].tocsr(copy=True)
                b.sum_duplicates()
                b.eliminate_zeros()
                b.sort_indices()
                for arr in (np.int64(m), b.indptr.astype("<i8"), b.indices.astype("<i8"),
                            b.data.astype("<c16")):
                    h.update(np.ascontiguousarray(arr).tobytes())
            blob = h.digest()
        return {"name": self.name, "N": self.N, "offset": self.offset,
                "hermitian": self.hermitian, "norm_bound": self.norm_bound,
                "dropped_norm": self.dropped_norm, "terms": terms,
                "digest": hashlib.sha256(blob).hexdigest()}

    def rename(self, name: str) -> Operator:
        """The same operator under another table name."""
        return Operator._make(check_name(name), self.N, self.offset, self.dropped_norm,
                              self.hermitian, self.norm_bound, self._words, self._blocks)

    # ------------------------------------------------------------------ sector form
    def sector_matrix(self, space, m: int) -> sp.csr_matrix:
        """The operator from sector ``m`` to sector ``m + offset``.

        Parameters
        ----------
        space : SectorSpace
            Any sector space of a chain of ``N`` sites (the basis depends on
            ``N`` only).
        m : int
            Magnon number of the source sector, ``0..N``.

        Returns
        -------
        scipy.sparse.csr_matrix
            ``(C(N, m + offset), C(N, m))`` complex, rows and columns in the sector
            basis order; all zero (``0 x C(N, m)``) when ``m + offset`` is outside
            ``0..N``. A fresh copy on every call.
        """
        if getattr(space, "N", None) != self.N:
            raise ValueError(f"space must be a SectorSpace of N = {self.N} sites, got "
                             f"{type(space).__name__} with N = {getattr(space, 'N', None)}")
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= m <= self.N:
            raise ValueError(f"m must be an integer in 0..{self.N}, got {m!r}")
        m = int(m)
        if m not in self._cache:
            self._cache[m] = self._build(m, space.sector(m).sites if self._words is not None
                                         else None, space.rank)
        return self._cache[m].copy()

    def _build(self, m: int, sites, rank) -> sp.csr_matrix:
        t = m + self.offset
        dim = comb(self.N, m)
        if not 0 <= t <= self.N:
            return sp.csr_matrix((0, dim), dtype=complex)
        if self._blocks is not None:
            return self._blocks[m].tocsr()
        return _words_matrix(self._words, self.N, m, self.offset, sites, rank)

    def dagger(self) -> Operator:
        """The adjoint (offset ``-offset``), same name."""
        if self._words is not None:
            return Operator._make(self.name, self.N, -self.offset, self.dropped_norm,
                                  self.hermitian, self.norm_bound,
                                  words=_dagger_words(self._words))
        blocks = {m + self.offset: b.conj().T.tocsr() for m, b in self._blocks.items()}
        return Operator._make(self.name, self.N, -self.offset, self.dropped_norm,
                              self.hermitian, self.norm_bound, blocks=blocks)

    # ------------------------------------------------------------------ full space
    def _check_dense(self, what: str) -> None:
        if self.N > MAX_DENSE_N:
            raise ValueError(f"{what}: N = {self.N} is above {MAX_DENSE_N} (a 2^N matrix); "
                             "use sector_matrix for the blocks")

    def to_sparse(self) -> sp.csr_matrix:
        """The kept part as a ``2^N x 2^N`` scipy CSR matrix (docs/model.md 13 order), N <= 14."""
        self._check_dense("to_sparse")
        N = self.N
        rows, cols, vals = [], [], []
        for m in range(N + 1):
            t = m + self.offset
            if not 0 <= t <= N:
                continue
            B = self._build(m, sector_sites(N, m), colex_rank).tocoo()
            rows.append(full_indices(N, t)[B.row])
            cols.append(full_indices(N, m)[B.col])
            vals.append(B.data)
        size = 1 << N
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                     np.concatenate(cols))), shape=(size, size))

    def to_dense(self) -> np.ndarray:
        """The kept part as a dense ``2^N x 2^N`` complex array (docs/model.md 13), N <= 14."""
        self._check_dense("to_dense")
        return self.to_sparse().toarray()

    def to_qutip(self):
        """The kept part as a QuTiP ``Qobj`` with dims ``[[2]*N, [2]*N]`` (N <= 14)."""
        qutip = require_qutip()
        self._check_dense("to_qutip")
        return qutip.Qobj(self.to_sparse(), dims=[[2] * self.N, [2] * self.N])


def _rebuild(name, N, offset, dropped, hermitian, bound, words, blocks):
    return Operator._make(name, N, offset, dropped, hermitian, bound, words, blocks)


def _block_norm_bound(blocks: dict) -> float:
    """Spectral norm bound of a fixed-offset operator: the largest norm of its sector
    blocks (they map orthogonal sectors to orthogonal sectors); exact for blocks of
    up to 400 columns, their Frobenius norm above."""
    out = 0.0
    for b in blocks.values():
        if b.nnz == 0:
            continue
        val = (np.linalg.norm(b.toarray(), 2) * (1 + 1e-12) if max(b.shape) <= 400
               else spla.norm(b))
        out = max(out, float(val))
    return out


def _sort_key(word: tuple) -> tuple:
    return (len(word), tuple((s, "zn+-".index(c)) for s, c in word))


def _number(tok: str, text: str) -> complex:
    try:
        val = complex(tok.replace("(", "").replace(")", ""))
    except ValueError:
        raise ValueError(f"text: cannot read the coefficient {tok!r} in {text!r}") from None
    if not (math.isfinite(val.real) and math.isfinite(val.imag)):
        raise ValueError(f"text: the coefficient {tok!r} in {text!r} must be finite")
    return val
