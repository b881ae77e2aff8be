"""Campaign loading: every rejection of DESIGN.md names the field (and region or prize)."""

from __future__ import annotations

import pytest

from rewardcore import ConfigError, load_campaign, parse_campaign

from .campaigns import ENDS_MS, STARTS_MS, campaign_toml, make_campaign


def test_example_campaign_loads(example_campaign):
    c = example_campaign
    assert len(c.regions) == 1111
    assert c.starts_ms < c.ends_ms
    busy = [r for r in c.regions if r.slots == 50]
    assert len(busy) == 40 and all(r.points_for(50) == 12 for r in busy)
    assert c.region_by_code[c.regions[0].code].points_for(1) in (5,)


def test_window_in_epoch_ms():
    c = make_campaign()
    assert (c.starts_ms, c.ends_ms) == (STARTS_MS, ENDS_MS)


def test_defaults_fill_regions_without_slots():
    text = campaign_toml().replace("slots = 2\ntiers = [{upto = 2, points = 10}]\n", "")
    text += "[defaults]\nslots = 3\ntiers = [{upto = 3, points = 7}]\n"
    # [defaults] must come before [[regions]] in TOML only by convention; msgspec reads tables.
    c = parse_campaign(text)
    assert (c.regions[0].slots, c.regions[0].tiers[0].points) == (3, 7)


def test_points_for_picks_first_tier_covering_slot():
    c = make_campaign(regions=((5, 20, ((10, 5), (20, 10))),))
    r = c.regions[0]
    assert [r.points_for(s) for s in (1, 10, 11, 20)] == [5, 5, 10, 10]


@pytest.mark.parametrize(
    "text_change, field",
    [
        (lambda t: t.replace('id = "test-campaign"', 'id = "Bad Id!"'), "$.campaign.id"),
        (lambda t: t.replace("ends_at = 2025-11-12T00:00:00+08:00",
                             "ends_at = 2025-11-10T00:00:00+08:00"), "campaign.ends_at"),
        (lambda t: t.replace("ends_at = 2025-11-12T00:00:00+08:00",
                             "ends_at = 2025-11-12T00:00:00"), "$.campaign.ends_at"),
        (lambda t: t + 'beneficiary = "shop"\n', None),  # lands in the last table: unknown field
        (lambda t: t.replace("slots = 2", "slots = -2"), "$.regions[0].slots"),
        (lambda t: t.replace("slots = 2", 'slots = "2"'), "$.regions[0].slots"),
        (lambda t: t.replace("stock = 5", "stock = -1"), "$.prizes[0].stock"),
        (lambda t: t.replace("cost_points = 10", "cost_points = 0"), "$.prizes[0].cost_points"),
    ],
)
def test_invalid_campaign_names_the_field(text_change, field):
    with pytest.raises(ConfigError) as err:
        parse_campaign(text_change(campaign_toml()), "c.toml")
    msg = str(err.value)
    assert msg.startswith("c.toml: ")
    if field:
        assert field in msg


@pytest.mark.parametrize("setting, value", [("beneficiary", "shop"), ("on_close", "keep"),
                                            ("settle_on", "paid")])
def test_enum_with_another_value(setting, value):
    with pytest.raises(ConfigError, match=f"campaign.{setting}"):
        make_campaign(**{setting: value})


def test_negative_number_rejected():
    with pytest.raises(ConfigError, match=r"campaign.budget_points"):
        make_campaign(budget_points=-1)


def test_repeated_region_code_names_both():
    with pytest.raises(ConfigError, match=r"regions\[1\]\.code: region code 7 repeats "
                                          r"\(first at regions\[0\]\)"):
        make_campaign(regions=((7, 1, ((1, 1),)), (7, 1, ((1, 1),))))


def test_repeated_prize_id():
    with pytest.raises(ConfigError, match=r"prizes\[1\]\.id: prize id 'mug' repeats"):
        make_campaign(prizes=(("mug", 1, 1), ("mug", 2, 2)))


def test_tiers_must_increase():
    with pytest.raises(ConfigError, match=r"regions\[0\] \(code 9\)\.tiers\[1\]\.upto: .*"
                                          r"strictly increasing"):
        make_campaign(regions=((9, 10, ((10, 5), (10, 6))),))


def test_last_tier_must_cover_slots():
    with pytest.raises(ConfigError, match=r"regions\[0\] \(code 9\)\.tiers\[0\]\.upto: the last "
                                          r"tier covers slots up to 5 but the region has 6"):
        make_campaign(regions=((9, 6, ((5, 5),)),))


def test_validation_error_in_region_names_its_code():
    text = campaign_toml(regions=((1, 1, ((1, 1),)), (440305, 1, ((1, 1),))))
    text = text.replace("code = 440305\nslots = 1", "code = 440305\nslots = 1.5")
    with pytest.raises(ConfigError, match=r"regions\[1\]\.slots.*region code 440305"):
        parse_campaign(text)


def test_not_toml():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_campaign("[campaign\nid=", "broken.toml")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read campaign file"):
        load_campaign(tmp_path / "nope.toml")
