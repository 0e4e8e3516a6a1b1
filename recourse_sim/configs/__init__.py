"""The configuration tree of ``python -m recourse_sim`` (hydra's search path ``pkg://recourse_sim.configs``).

It ships inside the package, so a wheel, ``pip install .`` and a git install run as an editable
install does; ``--config-dir DIR`` adds a directory of the user's own options in front of it.
"""
