"""The ``--counts`` syntax shared by the ``fcs`` and ``rare`` subcommands: its
default (:func:`default_counts`), its parser (:func:`parse_counts`) and the
refusal messages naming ``--counts`` (:func:`check_counts_flag`), so that the
count a user writes means the same in both."""

from __future__ import annotations

from ..exact.counting import check_counts
from .cli_args import CliError

__all__ = ["NET_SPIN", "default_counts", "check_counts_flag", "parse_counts"]

#: The paper's net spin to the right (hot) edge.
NET_SPIN = {"loss_right": 1, "loss_left": -1}


def default_counts(model) -> dict:
    """The count ``fcs`` uses without ``--counts``: the net spin to the right.

    The paper's scenarios (channels ``loss_left``, ``loss_right``):
    ``loss_right - loss_left``. A boundary drive (apart from dephasing, one pump
    at site 1 and one loss at site N, e.g. ``--scenario boundary``): the losses
    at site N, the magnons carried through the chain into the right reservoir
    (``pump@1 - loss@N`` is the change of the magnon number, which is bounded,
    so counting the pump instead gives the same long-time cumulants). Any other
    channel set has no default (``CliError`` naming the channels).
    """
    names = [ch.name for ch in model.channels]
    if set(NET_SPIN) <= set(names):
        return dict(NET_SPIN)
    moving = [ch for ch in model.channels if ch.kind != "dephasing"]
    if (len(moving) == 2 and moving[0].kind == "pump" and moving[0].site == 0
            and moving[1].kind == "loss" and moving[1].site == model.N - 1):
        return {moving[1].name: 1}
    if not names:
        raise CliError("the model has no jump channels (a closed chain): nothing to count")
    raise CliError("--counts is needed: no default count for the channels "
                   + ", ".join(names) + " (e.g. --counts " + names[0] + "=1)")


def check_counts_flag(model, counts) -> dict:
    """``check_counts`` of the API, with ``--counts`` named in its messages."""
    try:
        return check_counts(model, counts)
    except ValueError as exc:
        text = str(exc)
        raise CliError(f"--{text}" if text.startswith("counts") else f"--counts: {text}") \
            from exc


def parse_counts(spec: str) -> dict:
    """``--counts`` text ``channel=weight,...`` as ``{channel: integer weight}``."""
    out = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, w = item.partition("=")
        try:
            weight = int(w)
        except ValueError:
            weight = None
        if not sep or weight is None:
            raise CliError(f"--counts must be a list channel=integer, got {item.strip()!r}")
        out[name.strip()] = weight
    if not out:
        raise CliError("--counts must name at least one channel")
    return out
