"""The subcommands of ``fieldkit`` (``fieldkit/cli.py`` puts them together), one file a group.

Each is a dataclass that tyro turns into flags (field docstrings become ``--help``); ``run``
parses nothing more and calls the library.

- ``common.py``  tyro markers (``Positional``, ``Crop``) and helpers
- ``train.py``   train
- ``outputs.py`` eval, render, export
- ``distill.py`` distill
- ``view.py``    view
- ``scene.py``   scene info, scene demo, doctor
"""
