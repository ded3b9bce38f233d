"""Batch Normalization itself: reading BN layers, folding into the layer before, exact population statistics."""
