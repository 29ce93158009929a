"""Raw kernels and their thin launchers (installed as fastrnn.kernels). Nothing here imports
fastrnn."""
