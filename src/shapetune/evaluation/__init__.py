"""Evaluation service: reconstruction metrics (DC, HD, RVD) and diagnosis statistics."""
