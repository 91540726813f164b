"""scripts/energy_presets.py and what the README says of it: the committed rows name every
configuration of the demo's grids once per preset, and the README's figures (flipped energy
orderings, how close the flipped pairs are) are the ones the committed rows give."""
import csv
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("energy_presets", ROOT / "scripts" / "energy_presets.py")
ep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ep)


@pytest.fixture(scope="module")
def rows():
    with open(ROOT / "docs" / "energy_presets.csv", newline="") as f:
        out = list(csv.DictReader(f))
    for r in out:
        r["energy_pj"] = float(r["energy_pj"])
        r["headroom"] = r.get("headroom") or 0
    return out


def test_every_configuration_of_the_demo_once_per_preset(rows):
    from accel_sim.energy import EnergyTable
    groups = ep.by_preset(rows)
    assert sorted(groups) == sorted(EnergyTable.presets())
    demo = {ep.label(r) for r in rows}
    for name, group in groups.items():
        labels = [ep.label(r) for r in group]
        assert len(labels) == len(set(labels)), f"{name}: two rows share a label"
        assert set(labels) == demo


def test_the_labels_tell_headroom_apart():
    base = {"a": "e4m3fn", "scale": "tensor", "acc": "fp16"}
    assert ep.label({**base, "headroom": 0}) != ep.label({**base, "headroom": "auto"})
    assert ep.label({**base, "headroom": 0}) == ep.label(base)


def test_readme_flip_figures_are_the_committed_rows(rows):
    groups = ep.by_preset(rows)
    flips = ep.order_flips(groups)
    n = len(next(iter(groups.values())))
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"(\d+) of (\d+) energy\s+orderings\s+flip, all between\s+configurations\s+within\s+([\d.]+)%",
                  readme)
    assert m, "README no longer states the flipped energy orderings"
    assert (int(m[1]), int(m[2])) == (len(flips), n * (n - 1) // 2)
    assert float(m[3]) == round(100 * ep.flip_spread(groups, flips), 1)


def test_flip_spread_is_the_widest_flipped_pair():
    groups = {"p": [{"a": "x", "scale": "t", "acc": "f", "energy_pj": 100.0},
                    {"a": "y", "scale": "t", "acc": "f", "energy_pj": 110.0},
                    {"a": "z", "scale": "t", "acc": "f", "energy_pj": 300.0}],
              "q": [{"a": "x", "scale": "t", "acc": "f", "energy_pj": 105.0},
                    {"a": "y", "scale": "t", "acc": "f", "energy_pj": 100.0},
                    {"a": "z", "scale": "t", "acc": "f", "energy_pj": 301.0}]}
    flips = ep.order_flips(groups)
    assert [(x, y) for _, _, x, y in flips] == [("x/t/f", "y/t/f")]
    assert ep.flip_spread(groups, flips) == pytest.approx(0.10)
