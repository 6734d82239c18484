"""One way to shorten a layer or tensor name for a figure: keep the start and the informative end.

``model.layers.3.self_attn.q_proj`` is read from both ends: the start says where in the network
(``model.layers.3``, up to the first numeric part, the layer index), the end says what the layer
does (``q_proj``). A long name therefore loses its middle, at dot boundaries where possible:
``model.layers.3…mlp.down_proj``. Names are never cut from the left (that would drop the layer
index) nor from the right (that would drop the role).
"""

from __future__ import annotations

ELLIPSIS = "\u2026"


def short_label(name: str, width: int = 44) -> str:
    """``name`` when it has at most ``width`` characters; otherwise ``start…end`` in at most
    ``width`` characters. ``start`` is the name up to its first numeric part (``model.layers.3``),
    losing leading parts when it is too long (``layers.3``, then ``3``); ``end`` is as many
    whole trailing parts as then fit (at least one). When even that does not fit, the name is cut
    by characters, keeping about 40 % from the start and the rest from the end."""
    name = str(name)
    width = max(int(width), 5)
    if len(name) <= width:
        return name
    parts = name.split(".")
    budget = width - len(ELLIPSIS)
    if len(parts) >= 3:
        digit = next((k for k, p in enumerate(parts[:-1]) if p.isdigit()), 0)
        for first in range(0, digit + 1):
            head = ".".join(parts[first:digit + 1])
            room = budget - len(head)
            tail = _tail(parts[digit + 1:], room)
            if tail:
                return head + ELLIPSIS + tail
    keep_head = max(1, (budget * 2) // 5)
    return name[:keep_head] + ELLIPSIS + name[len(name) - (budget - keep_head):]


def _tail(parts: list[str], room: int) -> str:
    """The longest suffix of whole ``parts`` (joined by dots) of at most ``room`` characters
    that leaves at least one part out (otherwise nothing was shortened), or ``""``."""
    best = ""
    for k in range(len(parts) - 1, 0, -1):
        cand = ".".join(parts[k:])
        if len(cand) > room:
            break
        best = cand
    return best
