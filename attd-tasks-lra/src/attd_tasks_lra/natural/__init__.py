"""LRA Text (IMDB), Image (CIFAR-10) and Retrieval (AAN), built on attd-text and attd-vision."""
