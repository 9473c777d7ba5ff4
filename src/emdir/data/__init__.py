"""Data: the synthetic corpora and question sets, and readers of dataset and question files."""
