"""The CNN on the cluster: backbones and their Keras build, the exported model's description, how the
featurize driver acquires the model and ships it to the executors."""
