"""`python -m bench`: the service against baselines measured in the same run, as a table of ratios.

Each row is measured on this machine in this run, baseline included, so the ratios mean something
even where absolute numbers do not travel. These are measurements, not tests: nothing here fails.
"""
