"""cnn2gnn: distil a CNN teacher into a two-layer GNN student with a learned sparse graph head.

Reference implementation of Jiao, Zhang, Li, "CNN2GNN: How to Bridge CNN with GNN" (arXiv 2404.14822).
"""

__version__ = "0.1.0"
