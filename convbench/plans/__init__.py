"""Plans: the fastest kernel within an error budget, measured on this platform and reused.

* :mod:`~convbench.plans.choice`: candidates (a kernel's measured time and
  errors), the choice within a budget, the Pareto front.
* :mod:`~convbench.plans.cache`: the plan cache, a JSON file of choices keyed
  by platform fingerprint and problem; where ``algo="auto"`` looks.
* :mod:`~convbench.plans.tuning`: a sweep's records turned into choices
  (what ``convbench tune`` runs).
* :mod:`~convbench.plans.bound`: :func:`convbench.plan`, a convolution with
  its weights bound and transformed once.

This package imports nothing at import time, so that :mod:`convbench.api`
can use its cache without an import cycle.
"""
