"""One way to shorten a layer or tensor name for a figure: keep the start and the informative end.

``model.layers.3.self_attn.q_proj`` is read from both ends: the start says where in the network
(``model.layers.3``, up to the first numeric part, the layer index), the end says what the layer
does (``q_proj``). A long name therefore loses its middle, at dot boundaries where possible:
``model.layers.3…mlp.down_proj``, or ``model…layers.11…k_proj`` when even the start up to the
index is too long. Names are never cut from the left (the first part always stays) nor from the
right (the last part always stays, unless a single part is longer than the width).
"""

from __future__ import annotations

ELLIPSIS = "\u2026"


def short_label(name: str, width: int = 44) -> str:
    """``name`` when it has at most ``width`` characters; otherwise the first of these that fits
    in ``width`` characters: ``start…end`` with ``start`` the name up to its first numeric part
    (``model.layers.3``) and ``end`` as many whole trailing parts as fit;
    ``first…container.index…end``; ``first…index…end``; ``first…end``; and finally a character
    cut keeping about 40 % from the start and the rest from the end."""
    name = str(name)
    width = max(int(width), 5)
    if len(name) <= width:
        return name
    parts = name.split(".")
    if len(parts) >= 3:
        digit = next((k for k, p in enumerate(parts[1:-1], start=1) if p.isdigit()), None)
        first = parts[0]
        if digit is not None:
            rest = parts[digit + 1:]
            candidates = [[".".join(parts[:digit + 1])], [first, ".".join(parts[digit - 1:digit + 1])],
                          [first, parts[digit]]]
            for heads in candidates:
                if heads[-1] == first and len(heads) > 1:
                    continue  # the container is the first part: the first candidate covered it
                tail = _tail(rest, width - len(ELLIPSIS.join(heads)) - len(ELLIPSIS))
                if tail:
                    return ELLIPSIS.join(heads + [tail])
        tail = _tail(parts[1:], width - len(first) - len(ELLIPSIS))
        if tail:
            return first + ELLIPSIS + tail
    budget = width - len(ELLIPSIS)
    keep_head = max(1, (budget * 2) // 5)
    return name[:keep_head] + ELLIPSIS + name[len(name) - (budget - keep_head):]


def _tail(parts: list[str], room: int) -> str:
    """The longest suffix of whole ``parts`` (joined by dots, at least one part) of at most
    ``room`` characters that leaves out at least one of them when there are several, or ``""``."""
    best = ""
    for k in range(len(parts) - 1, -1, -1):
        cand = ".".join(parts[k:])
        if len(cand) > room:
            break
        best = cand
    return best


def short_labels(names, width: int = 44) -> list[str]:
    """:func:`short_label` of every name, widened (up to the full name) for names whose short
    labels would coincide, so that distinct names keep distinct labels (a figure that uses
    labels as categories would otherwise merge them)."""
    names = [str(n) for n in names]
    out = [short_label(n, width) for n in names]
    w = width
    while len(set(out)) < len(set(names)) and w < max(map(len, names), default=0):
        w += 8
        seen: dict[str, int] = {}
        for lab in out:
            seen[lab] = seen.get(lab, 0) + 1
        out = [short_label(n, w) if seen[lab] > 1 else lab for n, lab in zip(names, out)]
    return out
