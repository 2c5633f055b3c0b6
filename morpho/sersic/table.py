"""Write a Sérsic fit table as parquet, ECSV or FITS, with units, never half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from astropy.table import Table

from morpho.utils import atomic_output

__all__ = ["FORMATS", "UNITS", "write_table"]

#: File formats by suffix.
FORMATS = {".parquet": "parquet", ".ecsv": "ascii.ecsv", ".fits": "fits"}

#: Units of the table's columns (flux is in the images' own units).
UNITS = {
    "r_e_pix": "pix",
    "r_e_pix_err": "pix",
    "r_e_pix_lo": "pix",
    "r_e_pix_hi": "pix",
    "r_e_arcsec": "arcsec",
    "r_e_arcsec_err": "arcsec",
    "pa_deg": "deg",
    "pa_deg_err": "deg",
    "mag": "mag",
    "mag_err": "mag",
}


def write_table(table: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``table`` to ``path`` in the format its suffix names.

    Parameters
    ----------
    table : DataFrame
        The rows to write.
    path : path-like
        Ending in ``.parquet``, ``.ecsv`` or ``.fits``. ECSV and FITS carry the
        units of :data:`UNITS`.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    ValueError
        If the suffix is not one of :data:`FORMATS`.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown table format; use one of {sorted(FORMATS)}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        if fmt == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            astropy_table = Table.from_pandas(table)
            for name, unit in UNITS.items():
                if name in astropy_table.colnames:
                    astropy_table[name].unit = unit
            astropy_table.write(tmp, format=fmt)
    return path
