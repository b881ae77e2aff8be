"""Small campaigns for tests, written as TOML so they go through the real loader."""

from __future__ import annotations

from collections.abc import Sequence

from rewardcore import Campaign, parse_campaign

STARTS_MS = 1_762_790_400_000  # 2025-11-10T16:00:00Z = 2025-11-11T00:00:00+08:00
ENDS_MS = STARTS_MS + 86_400_000
IN_WINDOW = STARTS_MS + 1_000


def campaign_toml(
    regions: Sequence[tuple[int, int, Sequence[tuple[int, int]]]] = ((1, 2, ((2, 10),)),),
    prizes: Sequence[tuple[str, int, int]] = (("mug", 10, 5),),
    **settings: object,
) -> str:
    """regions: (code, slots, ((upto, points), ...)); prizes: (id, cost_points, stock)."""
    lines = [
        "[campaign]",
        'id = "test-campaign"',
        "starts_at = 2025-11-11T00:00:00+08:00",
        "ends_at = 2025-11-12T00:00:00+08:00",
    ]
    for key, value in settings.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    for code, slots, tiers in regions:
        tier_text = ", ".join(f"{{upto = {u}, points = {p}}}" for u, p in tiers)
        lines += ["[[regions]]", f"code = {code}", f"slots = {slots}", f"tiers = [{tier_text}]"]
    for pid, cost, stock in prizes:
        lines += ["[[prizes]]", f'id = "{pid}"', f'name = "{pid}"', f"cost_points = {cost}",
                  f"value_cents = {cost * 10}", f"stock = {stock}"]
    return "\n".join(lines) + "\n"


def make_campaign(*args: object, **kwargs: object) -> Campaign:
    return parse_campaign(campaign_toml(*args, **kwargs), "test.toml")  # type: ignore[arg-type]
