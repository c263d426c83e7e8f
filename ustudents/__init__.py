"""ustudents: Uninformed Students (Bergmann et al., CVPR 2020) in plain NumPy and CuPy."""

__version__ = "0.1.0"
