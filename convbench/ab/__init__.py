"""Paired A/B regression testing of two convbench source trees (``convbench ab``).

One job per module: :mod:`~convbench.ab.worker` (the stand-alone script each
side runs), :mod:`~convbench.ab.sides` (starting and talking to it),
:mod:`~convbench.ab.schedule` (ABBA blocks over fresh process pairs),
:mod:`~convbench.ab.verdict` (ratios, bootstrap interval, verdict),
:mod:`~convbench.ab.thresholds` (A/A calibration and its cache),
:mod:`~convbench.ab.instructions` (callgrind counts),
:mod:`~convbench.ab.accuracy` (inputs and envelopes), :mod:`~convbench.ab.trees`
(the two trees), :mod:`~convbench.ab.controller` (a run) and
:mod:`~convbench.ab.report` (its Markdown).
"""
