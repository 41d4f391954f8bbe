"""TAO VCN AOI skill bank: gap analysis, routing and mining for TAO Visual ChangeNet Classify.

This top-level module stays standard-library only: the hooks import ``tao_aoi.hooks``,
which imports this package first, and hooks must run on a bare ``python3``.
"""

__version__ = "0.1.0"
