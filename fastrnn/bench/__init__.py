"""The benchmark runner behind `python -m fastrnn bench`."""
