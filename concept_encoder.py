"""A checkout's import package: makes this folder importable as `concept_encoder` when the folder itself is on
`sys.path` (a script run as `python run_pretraining.py`, pytest through tests/conftest.py, scripts/ and benchmarks/,
the README's examples run from here), by naming it the package's search path.

So a checkout runs its own files whether or not the package is installed, and wherever an editable install points:
`sys.path` is searched before setuptools' editable finder. Not installed: `pip install .` installs this folder as the
package `concept_encoder` from `__init__.py` and the modules setup.cfg lists.
"""

import os

__path__ = [os.path.dirname(os.path.abspath(__file__))]
