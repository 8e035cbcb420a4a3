"""The benchmark's own inputs: scales as typed, and a registry of 26 real, disjoint PCN-based sites."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.bench import bench_registry, parse_scales, slowest
from orchestration.settings import SHIPPED_REFERENCE_DIR, load_sites


def test_scales_read_as_people() -> None:
    assert [(s.label, s.people) for s in parse_scales("100k, 1m,5M,2500,1.5m")] == [
        ("100k", 100_000), ("1m", 1_000_000), ("5m", 5_000_000), ("2500", 2_500), ("1.5m", 1_500_000)]
    for bad in ("", "lots", "5g", "-1k"):
        with pytest.raises(ValueError):
            parse_scales(bad)


def test_registry_has_26_valid_sites_on_disjoint_real_pcns(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump(bench_registry(26)))
    sites = load_sites(path)  # the pipeline's own validation
    assert len(sites) == 26
    programmes = [s.programme for s in sites]
    assert programmes.count("core20plus_connectors") == 11 and programmes.count("complete_care_communities") == 15
    pcns = [c for s in sites for c in s.geography_codes]
    assert len(pcns) == len(set(pcns)) == 11 * 2 + 15
    real = set(pd.read_csv(SHIPPED_REFERENCE_DIR / "gp_practice_map_2026-04_selected.csv", dtype=str).PCN_CODE)
    assert set(pcns) <= real
    assert all(s.plus_groups for s in sites)


def test_registry_refuses_more_sites_than_pcns() -> None:
    with pytest.raises(ValueError, match="more PCNs"):
        bench_registry(60)


def test_slowest_dbt_nodes_are_the_n_longest_slowest_first() -> None:
    nodes = {f"model_{i}": float((i * 7) % 20) for i in range(20)}  # 0..19 s, shuffled
    top = slowest(nodes, 3)
    assert list(top.values()) == [19.0, 18.0, 17.0]
    assert all(nodes[name] == seconds for name, seconds in top.items())
