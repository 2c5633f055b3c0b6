"""Where morpho's Hydra configs live, and helpers to compose them.

The configs are kept in the repository's top-level ``conf/`` folder and ship
inside the wheel as ``morpho/conf``, so a regular install finds them too. Users
add their own config folder without editing the package, with Hydra's search
path: ``morpho-simulate --config-dir my_conf simulation=my_mix`` or
``hydra.searchpath=[file:///abs/path/my_conf]``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["config_dir"]

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> str:
    """Absolute path of the folder holding morpho's Hydra configs.

    Raises
    ------
    FileNotFoundError
        If neither the installed ``morpho/conf`` nor a source checkout's ``conf/`` exists.
    """
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "simulate.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"morpho's configs were not found in {_PACKAGE / 'conf'} (installed wheel) or "
        f"{_PACKAGE.parent / 'conf'} (source checkout); reinstall morpho"
    )
