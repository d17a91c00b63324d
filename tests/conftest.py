"""Suite-wide settings.

Hypothesis' per-example deadline (200 ms) measures the shared CI machine more than the code:
property tests here check correctness, and speed is checked by benchmarks, so it is off.
"""

from hypothesis import settings

settings.register_profile("packrat", deadline=None, print_blob=True)
settings.load_profile("packrat")
