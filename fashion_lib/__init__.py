"""Fashion-MNIST analysis library: data, statistics, models, training, evaluation, explanation, serving.

Importing the package is cheap: TensorFlow is imported only by the modules that build or run models.
"""
