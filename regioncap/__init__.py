"""regioncap: dense region captioning and phrase grounding (Karpathy & Fei-Fei, CVPR 2015)."""

__version__ = "0.1.0"

__all__ = ["RegionCaptioner", "__version__"]


def __getattr__(name):
    # Lazy, so that `import regioncap.data` does not pay for importing torchvision's models.
    if name == "RegionCaptioner":
        from regioncap.models.model import RegionCaptioner

        return RegionCaptioner
    raise AttributeError(f"module 'regioncap' has no attribute {name!r}")
