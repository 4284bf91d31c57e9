"""Datasets, record lists, label tables and the data pipeline."""
