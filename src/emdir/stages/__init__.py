"""Stages: one thin function per Snakemake rule (files in, files out) calling the library."""
