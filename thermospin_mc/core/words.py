"""Operator words: their grammar, their expansion into elementary words and the
algebra of ``{elementary word: coefficient}`` dicts (docs/model.md section 13).

A word is a product of factors, one letter of :data:`LETTERS` and a 1-based site
each, on distinct sites (:func:`parse_word`; a sum of words in text form:
:func:`parse_terms`). ``x = s+ + s-`` and ``y = -i s+ + i s-`` are expanded
(:func:`expand_word`) so that every elementary word is a product of the letters
``z, n, +, -`` and changes the magnon number by ``#(-) - #(+)``
(:func:`word_offset`). A parsed word is a tuple ``((site0, letter), ...)``
sorted by 0-based site. Dicts of elementary words give the adjoint
(:func:`dagger_words`), the Frobenius norm in the full ``2^N`` space
(:func:`scaled_norm2`, :func:`full_norm`) and the sector matrices
(:func:`words_matrix`) without forming a ``2^N`` object; this is the word
representation of :class:`thermospin_mc.core.operators.Operator`.
"""

from __future__ import annotations

import itertools
import math
import re
from math import comb

import numpy as np
import scipy.sparse as sp

__all__ = ["LETTERS", "MAX_EXPANSION", "parse_word", "parse_terms", "expand_word",
           "word_offset", "word_text", "word_sort_key", "scaled_norm2", "full_norm",
           "dagger_words", "words_matrix"]

#: Letters of operator words.
LETTERS = ("x", "y", "z", "+", "-", "n")
#: Most elementary words one word may expand to (2 per x or y factor).
MAX_EXPANSION = 1 << 20
# one factor of a word: a letter and a 1-based site (surrounding spaces allowed)
_FACTOR = re.compile(r"\s*([A-Za-z+\-])(\d+)\s*")

# x = s+ + s-, y = -i s+ + i s-; z, n, +, - are elementary
_EXPAND = {"x": (("+", 1.0), ("-", 1.0)), "y": (("+", -1j), ("-", 1j)),
           "z": (("z", 1.0),), "n": (("n", 1.0),), "+": (("+", 1.0),), "-": (("-", 1.0),)}


def parse_word(word, N: int, arg: str) -> tuple:
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


def expand_word(factors: tuple, coef: complex, arg: str,
                word: str) -> list[tuple[tuple, complex]]:
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


def word_offset(word: tuple) -> int:
    """Change of the magnon number by an elementary word: ``#(-) - #(+)``."""
    return sum(1 if c == "-" else -1 if c == "+" else 0 for _, c in word)


def word_text(word: tuple) -> str:
    """A parsed word written back as text (``"z1 +3"``; 1-based sites)."""
    return " ".join(f"{c}{s + 1}" for s, c in word)


def scaled_norm2(words: dict) -> float:
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


def full_norm(scaled2: float, N: int) -> float:
    """``sqrt(scaled2 * 2^N)`` (``inf`` where it exceeds the float range)."""
    if scaled2 == 0.0:
        return 0.0
    exponent = math.log2(scaled2) + N
    if exponent < 1020:
        return math.sqrt(math.ldexp(scaled2, N))
    return math.inf if exponent >= 2046 else math.sqrt(scaled2) * 2.0 ** (N / 2)


def dagger_words(words: dict) -> dict:
    """The adjoint of ``{elementary word: coef}`` (``+`` and ``-`` swapped, coefficients
    conjugated)."""
    swap = {"+": "-", "-": "+"}
    return {tuple((s, swap.get(c, c)) for s, c in w): np.conj(v) for w, v in words.items()}


def words_matrix(words: dict, N: int, m: int, d: int, sites: np.ndarray, rank,
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


def word_sort_key(word: tuple) -> tuple:
    """Canonical order of elementary words: by length, then sites and letters ``z n + -``."""
    return (len(word), tuple((s, "zn+-".index(c)) for s, c in word))


def parse_terms(text: str) -> dict[str, complex]:
    """``{word: coefficient}`` of a sum of words (the grammar of :meth:`Operator.parse
    <thermospin_mc.core.operators.Operator.parse>`), words not yet validated.

    Terms are separated by a ``+`` or ``-`` standing alone (spaces on both
    sides); a term is an optional coefficient joined to its first factor by
    ``*`` (a Python number without spaces) and a word (factors separated by
    spaces). A coefficient alone is a multiple of the identity (the word ``""``).
    Repeated words add up.
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
    return terms


def _number(tok: str, text: str) -> complex:
    try:
        val = complex(tok.replace("(", "").replace(")", ""))
    except ValueError:
        raise ValueError(f"text: cannot read the coefficient {tok!r} in {text!r}") from None
    if not (math.isfinite(val.real) and math.isfinite(val.imag)):
        raise ValueError(f"text: the coefficient {tok!r} in {text!r} must be finite")
    return val
