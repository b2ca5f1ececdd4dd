"""Data: Flickr30k Entities reader, synthetic scenes, vocabulary, transforms, datasets."""
