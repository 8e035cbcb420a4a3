"""Dagster assets: ingestion, reference data, statistics, publication, synthetic generator."""
