"""The grid files shipped with raygenre (read as package data `raygenre.grids`, so an installed
wheel has them too). Your own grid files can live anywhere: `--grids DIR` or a path to a file."""
