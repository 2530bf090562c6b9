"""`AdapterInfo`: the adapter's name and training specialties, read from a per-adapter result's extras."""

from __future__ import annotations


class AdapterInfo:
    """Mixin for a `Result` of one adapter: `adapter` and `trained_on`, kept in `extras` so they are saved."""

    extras: dict

    @property
    def adapter(self) -> str:
        """The adapter's name ("" when not recorded)."""
        return str(self.extras.get("adapter", ""))

    @property
    def trained_on(self) -> list[str] | None:
        """The specialties the adapter was trained on; None for an adapter trained on all of them."""
        return self.extras.get("trained_on")
