"""The fetal-skull study's data: skull generator (skull), standard 2D planes (planes), ultrasound-like rendering,
cohort with 3-fold split (cohort), folds and view subsets (folds), preparation (prepare).

Kept empty of imports: the dashboard reads a study's view subsets without loading scipy's image modules.
"""
