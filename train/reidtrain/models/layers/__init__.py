"""Layers that several models share, each kept once: the CLIP towers, SIE, BNNeck heads, the selective scan, CHI's
hypergraph. Models import the submodule they need (``from reidtrain.models.layers.heads import BNNeck``)."""
