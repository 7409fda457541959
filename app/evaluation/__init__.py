"""Evaluation harness: datasets, baselines, resumable runs through the service, and the report.

``routegraph eval`` runs every method (the graphs and the baselines) on the same items of the same pool;
each item becomes a stored run with its gold answer as feedback (source ``eval``), and one results JSONL per
method in the results directory makes a re-run skip the items already finished.
"""
