"""Models: the CNN teacher wrappers (``cnn.py``) and the GNN student with its graph convolution (``gnn.py``)."""
