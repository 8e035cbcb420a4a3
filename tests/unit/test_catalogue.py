"""The catalogue is the one source of indicator definitions: rendered docs must match it."""
from assets.catalogue import load_catalogue, rendered_files

SPEC_INDICATORS = {
    "HYP_TREATED_TO_TARGET", "HYP_PREVALENCE", "SMI_HEALTH_CHECK", "COPD_FLU_VACCINATION",
    "COPD_PNEUMO_VACCINATION", "COPD_COVID_VACCINATION", "CANCER_EARLY_STAGE", "MATERNITY_CONTINUITY",
    "SMOKING_CESSATION_SUPPORT", "CYP_ASTHMA_RELIEVER_OVERUSE", "CYP_DIABETES_TECH", "CYP_EPILEPSY_NURSE",
    "CYP_TOOTH_EXTRACTIONS", "CYP_MH_ACCESS", "KNIFE_CRIME_RATE", "SHARP_OBJECT_ASSAULT_ADMISSIONS",
}


def test_catalogue_holds_every_spec_indicator_with_spec_targets() -> None:
    rows = {r["indicator_id"]: r for r in load_catalogue()}
    assert set(rows) == SPEC_INDICATORS | {"HYP_PREVALENCE_DSR"}
    assert rows["HYP_PREVALENCE_DSR"]["standardised_from"] == "HYP_PREVALENCE"
    targets = {k: float(v["target"]) for k, v in rows.items() if v["target"]}
    assert targets == {"HYP_TREATED_TO_TARGET": 80, "SMI_HEALTH_CHECK": 60, "CANCER_EARLY_STAGE": 75}
    assert {r["unit"] for r in rows.values()} == {"%", "per 100,000", "per 1,000"}
    assert rows["CYP_ASTHMA_RELIEVER_OVERUSE"]["direction"] == "lower"


def test_rendered_docs_are_up_to_date() -> None:
    for path, text in rendered_files().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python -m assets.catalogue"
