"""Dagster orchestration for the Core20PLUS5 evaluation pipeline."""
