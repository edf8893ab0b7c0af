"""The parameter selector: which tensors of an adapter state a strategy adapts.

`adapt=all` adapts everything; otherwise items joined by `+` are adapter names (every
tensor that adapter made) or globs over state keys (`layers.1.*`), and their union is
adapted. Tensors left out keep their initial values, so "adapter only" and "adapter +
norms" are the same run with a different selector.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from attd_core.errors import ConfigError


def select_keys(selector: str, owners: Mapping[str, str]) -> list[str]:
    """The keys of `owners` (state key -> adapter name) that `selector` picks, in order."""
    if selector.strip() == "all":
        return list(owners)
    names = set(owners.values())
    chosen: set[str] = set()
    for item in (part.strip() for part in selector.split("+")):
        if item in names:
            picked = {key for key, owner in owners.items() if owner == item}
        else:
            picked = {key for key in owners if fnmatchcase(key, item)}
        if not picked:
            raise ConfigError(
                f"adapt={selector!r}: {item!r} names no adapter ({', '.join(sorted(names))}) "
                f"and matches no adapter state key (e.g. {next(iter(owners), 'none')})"
            )
        chosen |= picked
    return [key for key in owners if key in chosen]
