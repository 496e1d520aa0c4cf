"""The certification engine: complete decisions of VNN-LIB properties (see verifier.py).

One module per concept: settings.py (the knobs, by phase), verifier.py (the facade and the
per-case pipeline), falsify.py, root.py (the whole box's bounds), input_split.py and
input_branching.py, relu_split.py, relu_branching.py, domains.py and lp_split.py (ReLU splitting),
leaves.py (LP and Z3 leaves), objective.py (unsafe rows and margins), neuron_bounds.py,
outcome.py (typed outcomes and statistics), properties.py (robustness properties).
"""
from .outcome import Decision, Statistics, Why
from .properties import case_within, robustness_property
from .settings import (BoundSettings, FalsifySettings, InputSplitSettings, LeafSettings, ReluSplitSettings,
                       Settings)
from .verifier import Verifier

__all__ = ["BoundSettings", "Decision", "FalsifySettings", "InputSplitSettings", "LeafSettings",
           "ReluSplitSettings", "Settings", "Statistics", "Verifier", "Why", "case_within", "robustness_property"]
