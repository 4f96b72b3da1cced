import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dmc", deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
# tools/mutation.py: every mutant reruns the property tests, so fewer examples
# and no example database (each mutant starts from the same examples)
settings.register_profile(
    "mutation", deadline=None, max_examples=10, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dmc"))
