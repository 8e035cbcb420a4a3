"""Data quality checks run on the marts before publishing."""
