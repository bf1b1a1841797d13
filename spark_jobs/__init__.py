"""Fruits! image-features Spark jobs: featurize (CNN features) and pca (dimension reduction)."""
