"""Evaluation of frozen encoders: features (`features`, with raw pixels as the baseline), weighted k-NN (`knn`),
the one linear probe (`probe`), and the measurements behind the zoo's cards (`cards`).

    feats, labels = extract_features(model, loader, pool="mean")
    knn_accuracy(train_feats, train_labels, test_feats, test_labels, k=20)
    linear_probe((train_feats, train_labels), (test_feats, test_labels))
"""

from .features import FeatureDataModule, RawPixels, extract_features, pca_project
from .knn import knn_accuracy, knn_predict
from .probe import CachedFeatures, linear_probe, linear_probe_head
