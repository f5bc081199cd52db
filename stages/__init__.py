"""One thin module per DVC stage (run as `python -m stages.<name>`).

A stage runs the library of its own tree: importing this package puts ``<tree>/src`` first on
``sys.path``, so a flow run's worktree of revision X executes X's ``onceflow``, not the one an
editable install (or another checkout) would provide. ``onceflow.stage.run`` then refuses to run
if the library it imported is still not that tree's.
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parent.parent / "src")
if Path(_SRC, "onceflow", "__init__.py").is_file() and sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)
