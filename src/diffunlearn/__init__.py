"""diffunlearn: train, unlearn, attribute and evaluate diffusion models as one Snakemake DAG."""

__version__ = "0.1.0"
