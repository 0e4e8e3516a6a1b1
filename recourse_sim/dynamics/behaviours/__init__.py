"""How agents act on the advice they were given: one module per behaviour.

A behaviour proposes, for every agent whose advice is due, the point it moves to this round;
compliance (which recommended feature changes are carried out) is applied afterwards by the
engine, the same for every behaviour. A new behaviour is one module here that subclasses
:class:`Behaviour` with a ``name``; it is then accepted as ``dynamics.behaviour=NAME``.
"""

from __future__ import annotations

import importlib
import pkgutil

from recourse_sim.dynamics.behaviours.base import BEHAVIOURS, ActionContext, Behaviour

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BEHAVIOURS", "ActionContext", "Behaviour"]
