"""The example SQL in docs/warehouse.md runs, on both targets, and answers the question it claims to."""
from __future__ import annotations

import re

from orchestration.settings import PROJECT_ROOT
from tests.warehouse.conftest import Target
from tests.warehouse.factory import make_publication


def example_sql() -> list[str]:
    text = (PROJECT_ROOT / "docs" / "warehouse.md").read_text()
    section = text.split("## Example SQL", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_documented_queries_run_on_both_targets(target: Target) -> None:
    queries = example_sql()
    assert len(queries) == 4
    target.publish(make_publication(sites=("lsc", "bb"), variant=0))
    target.publish(make_publication(sites=("lsc", "bb"), variant=1, withheld=(("bb", "2026-10-31"),)))
    gaps, cells, trend, as_of = target.query_many([q.replace("<= 7", "<= 2") for q in queries])
    assert sorted(gaps.site_code) == ["bb", "lsc"] and set(gaps.period_end.astype(str)) == {"2026-10-31"}
    assert len(cells) == 4 and len(trend) == 2 and set(trend.spc_variation) == {"common_cause"}
    assert sorted(set(as_of.publication_id)) == [1, 2] and not {"practice", "pcn"} & set(as_of.breakdown)
