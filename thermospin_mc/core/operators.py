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
(colexicographic order of the down-site sets, :mod:`thermospin_mc.core.sectors`).
Words never form a ``2^N`` object: ``"z1 z101"`` at ``N = 101`` works.
Operators given as dense matrices or QuTiP objects (``N <= 14``) are split into
the same sector blocks once, on construction.

Full-space order (dense matrices, QuTiP objects, :meth:`Operator.to_dense`):
the tensor product of sites ``1..N`` with site 1 the leftmost factor; on one
site index 0 is ``|up>`` and index 1 is ``|down>``, so the configuration with
down spins on the (1-based) sites ``S`` has the index ``sum_{i in S} 2^(N - i)``.

The word grammar and algebra live in :mod:`thermospin_mc.core.words`, the sector
bases of a bare chain and the full-space order in :mod:`thermospin_mc.core.basis`;
this module holds the :class:`Operator` type.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from math import comb

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .basis import SectorBasis, colex_rank, full_indices, full_tables, sector_sites
from .words import (
    LETTERS,
    MAX_EXPANSION,
    dagger_words,
    expand_word,
    full_norm,
    parse_terms,
    parse_word,
    scaled_norm2,
    word_offset,
    word_sort_key,
    word_text,
    words_matrix,
)

__all__ = ["Operator", "SectorBasis", "LETTERS", "MAX_DENSE_N", "MAX_EXPANSION", "require_qutip",
           "colex_rank", "sector_sites", "full_indices", "check_name"]

#: Largest chain whose full 2^N matrices (from_dense, from_qutip, to_dense, to_qutip)
#: are accepted.
MAX_DENSE_N = 14

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
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
            factors = parse_word(word, N, "terms")
            if isinstance(coef, bool) or not isinstance(coef, (int, float, complex, np.number)):
                raise ValueError(f"terms: the coefficient of {word!r} must be a number, "
                                 f"got {coef!r}")
            coef = complex(coef)
            if not (math.isfinite(coef.real) and math.isfinite(coef.imag)):
                raise ValueError(f"terms: the coefficient of {word!r} must be finite, got "
                                 f"{coef}")
            for w, c in expand_word(factors, coef, "terms", word):
                elementary[w] = elementary.get(w, 0.0) + c
        by_offset: dict[int, dict] = {}
        for w, c in elementary.items():
            if c != 0:
                by_offset.setdefault(word_offset(w), {})[w] = c
        if len(by_offset) == 1:
            offset = next(iter(by_offset))
        else:
            offset = 0
        kept = by_offset.pop(offset, {})
        dropped = full_norm(sum(scaled_norm2(ws) for ws in by_offset.values()), N)
        diff = dict(kept)
        for w, c in dagger_words(kept).items():
            diff[w] = diff.get(w, 0.0) - c
        scale = math.sqrt(scaled_norm2(kept))
        hermitian = offset == 0 and math.sqrt(scaled_norm2(diff)) <= _TOL * max(scale, 1e-300)
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
        terms = parse_terms(text)
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
        count, rank = full_tables(N)
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
        return {word_text(w): complex(c) for w, c in self._words.items()}

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
            terms = [[word_text(w), float(np.real(c)), float(np.imag(c))]
                     for w, c in sorted(self._words.items(), key=lambda wc: word_sort_key(wc[0]))]
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
        return words_matrix(self._words, self.N, m, self.offset, sites, rank)

    def dagger(self) -> Operator:
        """The adjoint (offset ``-offset``), same name."""
        if self._words is not None:
            return Operator._make(self.name, self.N, -self.offset, self.dropped_norm,
                                  self.hermitian, self.norm_bound,
                                  words=dagger_words(self._words))
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

