"""The runtime data pipeline: record lists, label tables, images and labels, samples, batches and their order.

Dataset preparation tools are in `mit_semseg.prepare`, synthetic data sets in `mit_semseg.synthetic`.
"""
